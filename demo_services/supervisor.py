"""Starts, stops and restarts the service processes, and owns the shop's fault state.

The supervisor is the single source of truth for faults: the control API changes them here,
and the supervisor pushes them to the processes concerned (a service's own fault to it, a
virtual dependency's fault to every caller of that dependency). ``down`` stops the process
(callers then get connection refused); clearing it starts the process again with its faults
given at start, so it never serves a request without them.

Processes are forked from a multiprocessing fork server that preloads the service code: one
interpreter start-up instead of one per service. The fork server reaps the services and
reports their exit; ``stop_all`` also stops the fork server and its resource tracker and waits
on them, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from demo_services.faults import Fault, apply_update
from demo_services.runner import serve_forked
from demo_services.service import HOST
from demo_services.topology import ServiceSpec, Topology

STARTUP_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 8.0
HEALTH_POLL_S = 0.1
# Modules the fork server imports once, so that each forked service starts warm.
PRELOAD = ["demo_services.preload"]


class SupervisorError(RuntimeError):
    """A process could not be started or reached; the message says which and why."""


@dataclass
class Child:
    spec: ServiceSpec
    fault: Fault = field(default_factory=Fault)
    proc: multiprocessing.process.BaseProcess | None = None
    # Write end of the service's lifeline pipe; closing it (or `up` dying) stops the service.
    lifeline: Connection | None = None

    @property
    def state(self) -> str:
        return "up" if self.proc is not None and self.proc.exitcode is None else "down"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.spec.port}"


class Supervisor:
    def __init__(
        self,
        topology: Topology,
        topology_path: Path | None,
        base_port: int | None,
        collector: str,
        admin_token: str | None,
    ) -> None:
        self.topology = topology
        self.topology_path = topology_path
        self.base_port = base_port
        self.collector = collector
        self.admin_token = admin_token or None
        self.children = {name: Child(spec) for name, spec in topology.services.items()}
        self.virtual_faults = {name: Fault() for name in topology.virtual}
        self.lock = asyncio.Lock()
        self.client = httpx.AsyncClient(trust_env=False, timeout=5.0)
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(PRELOAD)

    # ---- processes ------------------------------------------------------------------------

    def check_ports_free(self) -> None:
        """Fail early, naming the port, rather than letting a stranger answer /healthz."""
        for child in self.children.values():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((HOST, child.spec.port))
                except OSError as exc:
                    raise SupervisorError(
                        f"port {child.spec.port} for {child.spec.name} is not free ({exc.strerror})"
                        "; stop what uses it or pick other ports with --base-port"
                    ) from exc

    def spawn(self, name: str) -> None:
        child = self.children[name]
        faults: dict[str, Any] = {name: child.fault.to_json()}
        for target in child.spec.dependencies():
            if target in self.virtual_faults:
                faults[target] = self.virtual_faults[target].to_json()
        reader, writer = self.mp.Pipe(duplex=False)
        proc = self.mp.Process(
            target=serve_forked,
            args=(name, self.topology_path, self.base_port, self.collector, json.dumps(faults),
                  self.admin_token, reader),
            name=f"demo-{name}",
        )
        proc.start()
        reader.close()
        child.proc, child.lifeline = proc, writer

    async def wait_healthy(self, names: list[str], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending:
            for name in list(pending):
                child = self.children[name]
                if child.proc is None or child.proc.exitcode is not None:
                    code = None if child.proc is None else child.proc.exitcode
                    raise SupervisorError(
                        f"{name} exited during startup (exit code {code}); see its error above"
                    )
                try:
                    response = await self.client.get(child.url + "/healthz", timeout=1.0)
                    if response.status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise SupervisorError(
                    f"not healthy after {timeout_s:.0f} s: {sorted(pending)}"
                )
            if pending:
                await asyncio.sleep(HEALTH_POLL_S)

    async def stop(self, name: str) -> None:
        """SIGTERM, wait for exit (the service flushes its spans), SIGKILL if it hangs."""
        child = self.children[name]
        proc = child.proc
        if proc is None:
            return
        if proc.exitcode is None:
            proc.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while proc.exitcode is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.exitcode is None:
                proc.kill()
        await asyncio.to_thread(proc.join)
        proc.close()
        if child.lifeline is not None:
            child.lifeline.close()
            child.lifeline = None
        child.proc = None

    async def start_all(self) -> None:
        self.check_ports_free()
        for name in self.children:
            self.spawn(name)
        await self.wait_healthy(list(self.children))

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in self.children))
        await self.client.aclose()
        _stop_helper_processes()

    # ---- faults ---------------------------------------------------------------------------

    async def set_fault(self, target: str, update: dict[str, Any]) -> dict[str, Any]:
        """Apply a validated update to a service or virtual dependency; returns its new state."""
        async with self.lock:
            if target in self.virtual_faults:
                self.virtual_faults[target] = apply_update(self.virtual_faults[target], update)
                await self._push_virtual(target)
                return self.describe_target(target)
            child = self.children[target]
            old, new = child.fault, apply_update(child.fault, update)
            child.fault = new
            if new.down:
                await self.stop(target)
            elif child.state == "down":
                self.spawn(target)
                await self.wait_healthy([target])
            elif new != old:
                await self._push(target, target, new)
            return self.describe_target(target)

    async def clear(self, target: str | None = None) -> None:
        everything = Fault().to_json()
        targets = [target] if target is not None else [*self.children, *self.virtual_faults]
        for name in targets:
            await self.set_fault(name, everything)

    async def _push_virtual(self, target: str) -> None:
        fault = self.virtual_faults[target]
        callers = [c for c in self.topology.callers_of(target) if self.children[c].state == "up"]
        await asyncio.gather(*(self._push(caller, target, fault) for caller in callers))

    async def _push(self, service: str, target: str, fault: Fault) -> None:
        body = fault.to_json()
        body.pop("down")
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        url = f"{self.children[service].url}/admin/faults/{target}"
        try:
            response = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SupervisorError(f"cannot reach {service} to set its fault: {exc!r}") from exc
        if response.status_code != 200:
            raise SupervisorError(f"{service} refused the fault: {response.text}")

    # ---- views ----------------------------------------------------------------------------

    def describe_target(self, target: str) -> dict[str, Any]:
        if target in self.virtual_faults:
            spec = self.topology.virtual[target]
            return {"name": target, "kind": "virtual", "db_system": spec.db_system,
                    "fault": self.virtual_faults[target].to_json(),
                    "callers": self.topology.callers_of(target)}
        child = self.children[target]
        return {
            "name": target,
            "port": child.spec.port,
            "url": child.url,
            "state": child.state,
            "fault": child.fault.to_json(),
            "dependencies": child.spec.dependencies(),
            "version": child.fault.version or child.spec.version,
            "pid": child.proc.pid if child.proc is not None and child.state == "up" else None,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "services": [self.describe_target(name) for name in self.children],
            "virtual": list(self.virtual_faults),
            "virtual_faults": {n: f.to_json() for n, f in self.virtual_faults.items()},
        }


def _stop_helper_processes() -> None:
    """Stop and wait on multiprocessing's fork server and resource tracker.

    Left alone they exit when ``up`` exits, but then nobody waits on them (PID 1 may not reap
    orphans). The standard library has no public way to stop them (3.11–3.13); ``_stop`` is
    the one its own tests use, looked up with ``getattr`` so a version without it skips it.
    """
    from multiprocessing import forkserver, resource_tracker

    for helper in (getattr(forkserver, "_forkserver", None),
                   getattr(resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()
