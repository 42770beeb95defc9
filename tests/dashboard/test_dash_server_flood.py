"""The dashboard's HTTP server under a flood of idle connections: a bounded number of threads
(not one per connection), the page layout still served while they are open, and right away
once they are gone."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dash_procs import Proc, StartCollector, StartDashboard
from procs import open_files

IDLE = 3000
MAX_THREADS = 100
DEADLINE_S = 60.0


@pytest.fixture(autouse=True)
def enough_files() -> Iterator[None]:
    """This process holds ``IDLE`` sockets at once."""
    with open_files(IDLE):
        yield


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for {pid}")


def layout(url: str, timeout_s: float) -> httpx.Response:
    """``/_dash-layout``, retried on transport errors until ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url + "/_dash-layout", timeout=max(1.0, deadline - time.monotonic()),
                             trust_env=False)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def closed_by_server(socks: list[socket.socket], enough: int, timeout_s: float) -> int:
    """How many of ``socks`` the server has closed (recv gives b"") once ``enough`` are, or
    when ``timeout_s`` has passed."""
    closed = 0
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while closed < enough and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                sel.unregister(s)
                try:
                    closed += s.recv(4096) == b""
                except ConnectionResetError:
                    closed += 1
    return closed


def test_idle_connections_neither_multiply_threads_nor_lock_out_the_layout(
        start_collector: StartCollector, start_dashboard: StartDashboard,
        processes: list[Proc]) -> None:
    collector = start_collector()
    url = start_dashboard(collector, extra=["--max-connections", "1000"])
    pid = processes[-1].popen.pid
    port = int(url.rsplit(":", 1)[1])
    assert layout(url, DEADLINE_S).status_code == 200
    socks: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        # Served while all of them are still open on this side.
        assert layout(url, DEADLINE_S).status_code == 200
        assert threads_of(pid) < MAX_THREADS
        # Past --max-connections the oldest idle ones were closed to make room.
        assert closed_by_server(socks, IDLE - 1000, DEADLINE_S) >= IDLE - 1000
        assert threads_of(pid) < MAX_THREADS
    finally:
        for s in socks:
            s.close()
    # Once they are gone the layout answers at once (not after minutes, as it once did).
    started = time.monotonic()
    assert layout(url, 10).status_code == 200
    assert time.monotonic() - started < 10
    assert threads_of(pid) < MAX_THREADS
    assert processes[-1].popen.poll() is None, processes[-1].log()
