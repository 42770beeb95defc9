"""The shop's parts one at a time, for containers: ``load`` (the load generator alone, against
a frontend URL) and ``control`` (the control API for services that run elsewhere). ``serve``
(one service) lives in ``demo_services.runner``. Each runs in the foreground until SIGINT or
SIGTERM and then stops cleanly (a container's PID 1 gets SIGTERM from ``docker stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from demo_services.control import build_control_app
from demo_services.loadgen import LoadGenerator
from demo_services.remote import RemoteShop
from demo_services.topology import load_topology


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_load(frontend: str, rate: float) -> int:
    """User journeys at ``rate`` per second against ``frontend`` until a signal."""

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        load = LoadGenerator(frontend, rate)
        print(f"load: {rate:g} journeys/s against {frontend}; Ctrl-C stops", flush=True)
        await load.run(stop)
        s = load.stats
        print(f"load: {s.journeys} journeys, {s.requests} requests, {s.failed_requests} failed,"
              f" {s.skipped_journeys} skipped (more than the in-flight limit)", flush=True)
        return 0

    return asyncio.run(main())


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the command owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_control(
    topology_path: Path | None,
    base_port: int | None,
    host: str,
    port: int,
    admin_token: str | None,
    peer_host_template: str | None,
) -> int:
    """Serve the control API for services reached at ``peer_host_template`` until a signal."""
    topology = load_topology(topology_path).with_base_port(base_port)

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        shop = RemoteShop(topology, peer_host_template, admin_token)
        config = uvicorn.Config(build_control_app(shop), host=host, port=port,
                                log_level="warning", access_log=False, lifespan="off")
        server = _Server(config)
        probe = asyncio.create_task(shop.run_probe(stop))
        serve = asyncio.create_task(server.serve())
        print(f"demo control API on http://{host}:{port}/services for "
              f"{len(topology.services)} services at {shop.url(next(iter(topology.services)))}"
              " and so on", flush=True)
        await asyncio.wait({serve, asyncio.create_task(stop.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        await serve
        await probe
        await shop.aclose()
        if not server.started:
            print(f"error: the control API could not listen on {host}:{port}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(main())
