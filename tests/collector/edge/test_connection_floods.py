"""Connection floods: thousands of idle sockets and a slowloris never lock out ingest or
``/healthz``. The collector closes connections that send no complete headers in time
(``--header-timeout``) and, past ``--max-idle-connections``, the oldest idle one to make room;
a connection past ``--max-connections`` with every slot busy gets 503 with Retry-After. All of
it is counted on ``/metrics``."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from live_collector import PB, Collector, metric, pairs, wait_for_calls
from procs import open_files

TOKEN = "flood-token-for-tests"
AUTH = {**PB, "Authorization": f"Bearer {TOKEN}"}
IDLE = 2000
HEADER_TIMEOUT_S = 1.0
DEADLINE_S = 60.0
CLOSED = "conway_http_connections_closed_total"
REJECTED = "conway_http_rejected_total"


@pytest.fixture(autouse=True)
def enough_files() -> Iterator[None]:
    """This process holds ``IDLE`` sockets at once."""
    with open_files(IDLE):
        yield


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def open_idle(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that never send a byte."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def until_ok(method: str, url: str, **kwargs: object) -> httpx.Response:
    """The request, repeated (after Retry-After) until it is not refused; every 503 on the
    way must say when to come back."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            r = httpx.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        if r.status_code != 503:
            return r
        assert r.headers.get("retry-after") == "1", r.headers
        if time.monotonic() > deadline:
            return r
        time.sleep(float(r.headers["retry-after"]))


def wait_closed_by_server(socks: list[socket.socket], timeout_s: float) -> list[bytes]:
    """What each socket's first ``recv`` returned once readable (b"" = closed by the server);
    sockets still open at the deadline are missing from the list."""
    got: list[bytes] = []
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while len(got) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                sel.unregister(s)
                try:
                    got.append(s.recv(4096))
                except ConnectionResetError:
                    got.append(b"<reset>")
    return got


class Slowloris(threading.Thread):
    """One request whose headers arrive a line every ``interval_s``, never completed."""

    def __init__(self, port: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval_s = interval_s
        self.lines = 0
        self.closed_by_server: bytes | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\n")
            self.lines = 1
            s.settimeout(self.interval_s)
            while not self._halt.is_set():
                try:
                    self.closed_by_server = s.recv(4096)
                    return
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    self.closed_by_server = b"<reset>"
                    return
                try:
                    s.sendall(b"X-Slow-%d: still coming\r\n" % self.lines)
                    self.lines += 1
                except OSError:
                    self.closed_by_server = b"<send failed>"
                    return

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def test_idle_flood_and_slowloris_are_closed_and_ingest_keeps_working() -> None:
    c = Collector("--ingest-token", TOKEN, "--header-timeout", str(HEADER_TIMEOUT_S),
                  "--pairing-ttl", "30")
    socks: list[socket.socket] = []
    slow = Slowloris(port_of(c.url), interval_s=0.4)
    try:
        socks = open_idle(c.port, IDLE)
        slow.start()
        r = until_ok("POST", c.url + "/v1/traces", content=pairs("flood", 3), headers=AUTH)
        assert r.status_code == 200, r.content
        assert until_ok("GET", c.url + "/healthz").status_code == 200
        assert until_ok("GET", c.url + "/api/graph").status_code == 200

        # Every idle socket is closed by the server (an orderly close: recv gives b""),
        # the last ones when their header timeout runs out.
        got = wait_closed_by_server(socks, DEADLINE_S)
        assert len(got) == IDLE, f"{IDLE - len(got)} idle connections still open"
        assert set(got) == {b""}, {g for g in got if g}
        # Trickling header lines does not keep a request alive past the header timeout.
        slow.join(timeout=DEADLINE_S)
        assert not slow.is_alive(), f"slowloris still connected after {slow.lines} lines"
        # Closed by the server: an orderly close, or a reset when the line it sent just
        # before was still unread (the kernel resets a socket closed with unread data).
        assert slow.closed_by_server in (b"", b"<reset>", b"<send failed>"), \
            slow.closed_by_server

        assert wait_for_calls(c.url, "flood-a", "flood-b", 3) == 3
        timed_out = metric(c.url, CLOSED, reason="header_timeout")
        evicted = metric(c.url, CLOSED, reason="idle_evicted")
        assert timed_out >= 256, (timed_out, evicted)  # the newest idle ones, at least
        assert timed_out + evicted >= IDLE + 1, (timed_out, evicted)
        assert metric(c.url, "conway_http_connections_open") <= 2  # the /metrics reader
        assert metric(c.url, "conway_http_header_timeout_seconds") == HEADER_TIMEOUT_S
    finally:
        try:
            slow.stop()
        finally:
            close_all(socks)
            c.stop()


def test_idle_flood_cannot_take_the_slots_of_real_requests() -> None:
    # A header timeout far longer than the test: only the idle limit protects the server here.
    c = Collector("--ingest-token", TOKEN, "--header-timeout", "600", "--pairing-ttl", "30")
    socks: list[socket.socket] = []
    try:
        socks = open_idle(c.port, IDLE)
        for i in range(3):  # while all 2,000 are still open on this side
            r = until_ok("POST", c.url + "/v1/traces", content=pairs(f"held{i}", 2),
                         headers=AUTH)
            assert r.status_code == 200, r.content
            assert until_ok("GET", c.url + "/healthz").status_code == 200
        idle = metric(c.url, "conway_http_connections_idle")
        assert 0 < idle <= metric(c.url, "conway_http_max_idle_connections") == 512
        assert metric(c.url, CLOSED, reason="idle_evicted") >= IDLE - 512
        assert metric(c.url, REJECTED, reason="connection_limit") == 0
        for i in range(3):
            assert wait_for_calls(c.url, f"held{i}-a", f"held{i}-b", 2) == 2
    finally:
        close_all(socks)
        c.stop()


def hold_active(port: int) -> socket.socket:
    """A connection with a request in progress: headers sent, body awaited (``100 Continue``
    shows the app is reading it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
              + f"Authorization: Bearer {TOKEN}\r\n".encode()
              + b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        assert chunk, f"closed before 100 Continue: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 100"), answer
    return s


def read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def test_past_the_connection_limit_with_every_slot_busy_answers_503_with_retry_after() -> None:
    c = Collector("--ingest-token", TOKEN, "--max-connections", "3",
                  "--max-idle-connections", "2", "--body-timeout", "120")
    holders: list[socket.socket] = []
    try:
        holders = [hold_active(c.port) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", c.port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_until_closed(s)  # then the server closes the connection
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode().lower().split("\r\n")
        assert lines[0].startswith("http/1.1 503"), answer
        assert "retry-after: 1" in lines and "connection: close" in lines, lines
        assert b"3 connections open (limit 3)" in body
        r = httpx.get(c.url + "/healthz", timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"

        close_all(holders)
        holders = []
        assert until_ok("GET", c.url + "/healthz").status_code == 200
        assert metric(c.url, REJECTED, reason="connection_limit") >= 2
        assert metric(c.url, "conway_http_max_connections") == 3
    finally:
        close_all(holders)
        c.stop()


def read_response(s: socket.socket) -> bytes:
    """One whole response (with a Content-Length) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(4096)
    return head


def test_kept_alive_connections_are_closed_when_idle_or_slow_with_their_next_headers() -> None:
    c = Collector("--header-timeout", str(HEADER_TIMEOUT_S), "--keep-alive-timeout", "1")
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", c.port), timeout=DEADLINE_S) as idle, \
                socket.create_connection(("127.0.0.1", c.port), timeout=DEADLINE_S) as slow:
            for s in (idle, slow):
                s.sendall(get)
                assert read_response(s).startswith(b"HTTP/1.1 200")
                s.sendall(get)  # kept alive: a second request on the same connection
                assert read_response(s).startswith(b"HTTP/1.1 200")
            slow.sendall(get[:20])  # the next request's headers start, and never finish
            assert idle.recv(4096) == b""
            assert slow.recv(4096) == b""
        assert metric(c.url, CLOSED, reason="keep_alive_timeout") >= 1
        assert metric(c.url, CLOSED, reason="header_timeout") >= 1
    finally:
        c.stop()
