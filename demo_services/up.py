"""``python -m demo_services up``: the whole shop, its control API and its load, until a signal.

Order: check ports, start every service process, start the control API, wait until every
service answers /healthz, print the URLs, run the load generator. SIGINT or SIGTERM stops the
load, the control API and every service (each flushes its spans), waits on every child, exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from demo_services.control import build_control_app
from demo_services.loadgen import LoadGenerator
from demo_services.messaging import BROKER_ENV
from demo_services.service import HOST
from demo_services.supervisor import Supervisor, SupervisorError
from demo_services.topology import load_topology


@dataclass(slots=True)
class UpOptions:
    topology: Path | None
    collector: str
    admin_port: int
    admin_token: str | None
    rate: float
    base_port: int | None


class _ControlServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``up`` owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_up(options: UpOptions) -> int:
    try:
        return asyncio.run(_up(options))
    except SupervisorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _up(options: UpOptions) -> int:
    started = time.monotonic()
    topology = load_topology(options.topology).with_base_port(options.base_port)
    # Children get the collector explicitly; the variable keeps any other OTel code consistent.
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = options.collector
    # The topics' broker is the control API's (demo_services.broker): every service inherits it.
    os.environ[BROKER_ENV] = f"http://{HOST}:{options.admin_port}"
    supervisor = Supervisor(
        topology, options.topology, options.base_port, options.collector, options.admin_token
    )
    admin_socket = _bind(options.admin_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = uvicorn.Config(
        build_control_app(supervisor), log_level="warning", access_log=False, lifespan="off"
    )
    server = _ControlServer(config)
    server_task = asyncio.create_task(server.serve(sockets=[admin_socket]))
    # Users arrive at the frontend; a custom topology without one gets its first service.
    entry = "frontend" if "frontend" in supervisor.children else next(iter(supervisor.children))
    load = LoadGenerator(supervisor.children[entry].url, options.rate)
    load_task: asyncio.Task[None] | None = None
    try:
        startup = asyncio.create_task(supervisor.start_all())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():
            startup.cancel()
            print("interrupted during startup; stopping", file=sys.stderr)
            return 0
        startup.result()
        stopper.cancel()
        _announce(supervisor, options, time.monotonic() - started)
        await _warn_if_collector_unreachable(options.collector)
        load_task = asyncio.create_task(load.run(stop))
        await stop.wait()
        print("stopping the shop...", flush=True)
        return 0
    finally:
        stop.set()
        if load_task is not None:
            await load_task
        server.should_exit = True
        await server_task
        await supervisor.stop_all()
        if options.rate > 0:
            s = load.stats
            print(
                f"load: {s.journeys} journeys, {s.requests} requests, {s.failed_requests} failed,"
                f" {s.skipped_journeys} skipped (more than the in-flight limit)",
                flush=True,
            )


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise SupervisorError(
            f"admin port {port} is not free ({exc.strerror}); pick another with --admin-port"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _announce(supervisor: Supervisor, options: UpOptions, elapsed_s: float) -> None:
    width = max(len(name) for name in supervisor.children)
    lines = [f"Conway demo shop: {len(supervisor.children)} services up in {elapsed_s:.1f} s"]
    for name, child in supervisor.children.items():
        pid = child.proc.pid if child.proc else "-"
        lines.append(f"  {name:<{width}}  {child.url}  (pid {pid})")
    lines.append(f"  control API  http://{HOST}:{options.admin_port}/services")
    lines.append(f"  traces to    {options.collector}")
    rate = f"{options.rate:g} journeys/s" if options.rate > 0 else "off"
    lines.append(f"  load         {rate}")
    lines.append("ready; Ctrl-C stops everything")
    print("\n".join(lines), flush=True)


async def _warn_if_collector_unreachable(collector: str) -> None:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
            await client.get(collector)
    except httpx.HTTPError:
        print(
            f"warning: no collector answers at {collector}; spans are dropped until one does"
            " (start it with `python -m collector`)",
            file=sys.stderr,
            flush=True,
        )
