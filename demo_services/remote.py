"""Faults for a shop whose services run elsewhere (one container each): the control API's
backend for ``python -m demo_services control``.

It keeps the shop's fault state, as the supervisor does for ``up``, and pushes each change to
the admin endpoint of the services concerned (``POST /admin/faults/{target}`` on
``http://<peer host>:<port>``): a service's own fault to it, a virtual dependency's fault to
every caller. It starts and stops nothing, so ``down`` is refused with what to do instead
(``docker compose stop NAME``). A probe polls every service's ``/healthz``; a service seen up
again (its container restarted with no faults) gets its faults pushed again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from demo_services.defaults import peer_host
from demo_services.faults import Fault, FaultError, apply_update
from demo_services.supervisor import SupervisorError
from demo_services.topology import Topology

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 1.0
PUSH_TIMEOUT_S = 5.0


class RemoteShop:
    """The fault state of services reached over the network; see the module docstring."""

    def __init__(
        self, topology: Topology, peer_host_template: str | None, admin_token: str | None
    ) -> None:
        self.topology = topology
        self.peer_host_template = peer_host_template
        self.admin_token = admin_token or None
        self.faults = {name: Fault() for name in topology.services}
        self.virtual_faults = {name: Fault() for name in topology.virtual}
        self.states: dict[str, str] = {name: "down" for name in topology.services}
        self.lock = asyncio.Lock()
        self.client = httpx.AsyncClient(trust_env=False, timeout=PUSH_TIMEOUT_S)

    def url(self, service: str) -> str:
        host = peer_host(self.peer_host_template, service)
        return f"http://{host}:{self.topology.services[service].port}"

    # ---- probing --------------------------------------------------------------------------

    async def probe_once(self) -> None:
        names = list(self.topology.services)
        results = await asyncio.gather(*(self._healthy(n) for n in names))
        for name, up in zip(names, results, strict=True):
            was = self.states[name]
            self.states[name] = "up" if up else "down"
            if up and was == "down" and self._has_faults(name):
                # Its container restarted with no faults: give them back.
                with contextlib.suppress(SupervisorError):
                    async with self.lock:
                        await self._push_all(name)

    async def run_probe(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.probe_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL_S)

    async def _healthy(self, name: str) -> bool:
        try:
            response = await self.client.get(self.url(name) + "/healthz", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _has_faults(self, name: str) -> bool:
        deps = self.topology.services[name].dependencies()
        return not self.faults[name].is_clear or any(
            not self.virtual_faults[d].is_clear for d in deps if d in self.virtual_faults
        )

    # ---- faults (the control API's calls) -------------------------------------------------

    async def set_fault(self, target: str, update: dict[str, Any]) -> dict[str, Any]:
        if update.get("down") and target in self.faults:
            raise FaultError(
                f"down stops a process, and {target} runs in its own container: stop it with "
                f"`docker compose stop {target}` (start it again with `docker compose start "
                f"{target}`); error_rate, latency_ms, version and cpu_hog work from here"
            )
        async with self.lock:
            if target in self.virtual_faults:
                self.virtual_faults[target] = apply_update(self.virtual_faults[target], update)
                callers = [c for c in self.topology.callers_of(target) if self.states[c] == "up"]
                await asyncio.gather(*(self._push(c, target, self.virtual_faults[target])
                                       for c in callers))
            else:
                self.faults[target] = apply_update(self.faults[target], update)
                await self._push(target, target, self.faults[target])
            return self.describe_target(target)

    async def clear(self, target: str | None = None) -> None:
        everything = Fault().to_json()
        for name in [target] if target is not None else [*self.faults, *self.virtual_faults]:
            await self.set_fault(name, everything)

    async def _push_all(self, service: str) -> None:
        await self._push(service, service, self.faults[service])
        for dep in self.topology.services[service].dependencies():
            if dep in self.virtual_faults:
                await self._push(service, dep, self.virtual_faults[dep])

    async def _push(self, service: str, target: str, fault: Fault) -> None:
        body = fault.to_json()
        body.pop("down")
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        url = f"{self.url(service)}/admin/faults/{target}"
        try:
            response = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.states[service] = "down"
            raise SupervisorError(
                f"cannot reach {service} at {self.url(service)} to set its fault "
                f"({type(exc).__name__}); is its container running?"
            ) from exc
        if response.status_code != 200:
            raise SupervisorError(f"{service} refused the fault: {response.text}")
        self.states[service] = "up"

    # ---- views ----------------------------------------------------------------------------

    def describe_target(self, target: str) -> dict[str, Any]:
        if target in self.virtual_faults:
            spec = self.topology.virtual[target]
            return {"name": target, "kind": "virtual", "db_system": spec.db_system,
                    "fault": self.virtual_faults[target].to_json(),
                    "callers": self.topology.callers_of(target)}
        service = self.topology.services[target]
        fault = self.faults[target]
        return {
            "name": target,
            "port": service.port,
            "url": self.url(target),
            "state": self.states[target],
            "fault": fault.to_json(),
            "dependencies": service.dependencies(),
            "version": fault.version or service.version,
            "pid": None,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "services": [self.describe_target(name) for name in self.faults],
            "virtual": list(self.virtual_faults),
            "virtual_faults": {n: f.to_json() for n, f in self.virtual_faults.items()},
        }

    async def aclose(self) -> None:
        await self.client.aclose()
