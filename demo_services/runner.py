"""Runs one demo service as a process.

``up`` forks each service from a multiprocessing fork server that has already imported this
module (``serve_forked``), so twelve processes start without twelve interpreter start-ups;
``python -m demo_services serve NAME`` runs one service on its own in the foreground (a
container's command: ``--host 0.0.0.0``, peers by name through ``--peer-host-template``).
The process exits on SIGTERM/SIGINT after flushing its spans, and on its own when the process
that started it disappears, so a killed ``up`` leaves no service behind: a forked service
watches its *lifeline*, the read end of a pipe whose only writer is ``up`` (EOF means ``up`` is
gone); a ``serve`` process watches its parent pid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from multiprocessing.connection import Connection
from pathlib import Path

import uvicorn

from demo_services.service import HOST, DemoService, build_app
from demo_services.topology import load_topology

PARENT_CHECK_S = 1.0
GRACEFUL_SHUTDOWN_S = 3


def run_service(
    name: str,
    topology_path: Path | None,
    base_port: int | None,
    collector: str,
    faults_json: str | None,
    parent_pid: int | None,
    admin_token: str | None = None,
    lifeline: Connection | None = None,
    host: str = HOST,
    peer_host_template: str | None = None,
) -> int:
    topology = load_topology(topology_path).with_base_port(base_port)
    if name not in topology.services:
        raise SystemExit(f"unknown service {name!r}; valid: {sorted(topology.services)}")
    # Without a collector the exporter would log every failed batch; `up` warns once instead.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    service = DemoService(
        topology.services[name],
        topology,
        collector,
        admin_token=admin_token,
        peer_host_template=peer_host_template,
    )
    if faults_json:
        service.load_faults(json.loads(faults_json))
    config = uvicorn.Config(
        build_app(service),
        host=host,
        port=service.spec.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="h11",  # preloaded by the fork server (see demo_services.preload)
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)
    try:
        asyncio.run(_serve(server, parent_pid, lifeline))
    finally:
        service.cpu_hog.stop()  # normally done at shutdown already; also if startup failed
    return 0 if server.started else 1


def serve_forked(
    name: str,
    topology_path: Path | None,
    base_port: int | None,
    collector: str,
    faults_json: str | None,
    admin_token: str | None,
    lifeline: Connection,
) -> None:
    """Entry point in a forked child: own process group, so a terminal's Ctrl-C reaches only
    ``up``, which stops its children in order."""
    os.setpgid(0, 0)
    try:
        code = run_service(
            name, topology_path, base_port, collector, faults_json, None, admin_token, lifeline
        )
    except KeyboardInterrupt:
        code = 0
    if code:
        raise SystemExit(code)


async def _serve(
    server: uvicorn.Server, parent_pid: int | None, lifeline: Connection | None
) -> None:
    def stop() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    if lifeline is not None:
        # Readable means EOF: nobody will ever write; only `up` held the other end.
        loop.add_reader(lifeline.fileno(), stop)
    watcher = asyncio.create_task(_watch_parent(server, parent_pid))
    try:
        await server.serve()
    finally:
        watcher.cancel()
        if lifeline is not None:
            loop.remove_reader(lifeline.fileno())


async def _watch_parent(server: uvicorn.Server, parent_pid: int | None) -> None:
    if parent_pid is None:
        return
    while not server.should_exit:
        await asyncio.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            server.should_exit = True
