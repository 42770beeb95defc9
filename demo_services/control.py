"""The demo control API served by ``up`` (default http://127.0.0.1:8100), and by ``control``
for services in their own containers (``demo_services.remote``).

  GET    /services          the services (name, port, url, state, fault, dependencies, version,
                            pid) and the virtual dependencies
  POST   /faults/{target}   JSON {"error_rate"?, "latency_ms"?, "down"?, "version"?,
                            "cpu_hog"?}; merged into the target's current fault; answers the
                            target's new state
  DELETE /faults/{target}   clear one target;  DELETE /faults  clear all
  GET    /healthz

and the demo's message broker, ``/topics`` (``demo_services.broker``).

Errors: 404 unknown target (the message lists valid names), 400 bad value, 401 bad or missing
token (when a token is configured, mutating calls need ``Authorization: Bearer <token>``),
502 when a service process could not be reached or restarted.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from demo_services.broker import Broker, broker_routes
from demo_services.faults import FaultError, parse_update
from demo_services.supervisor import SupervisorError
from demo_services.topology import Topology


class FaultBackend(Protocol):
    """Who owns the fault state: the ``Supervisor`` of ``up`` (which also starts and stops the
    processes) or ``demo_services.remote.RemoteShop`` (services in their own containers)."""

    topology: Topology
    admin_token: str | None

    def describe(self) -> dict[str, Any]: ...
    def describe_target(self, target: str) -> dict[str, Any]: ...
    async def set_fault(self, target: str, update: dict[str, Any]) -> dict[str, Any]: ...
    async def clear(self, target: str | None = None) -> None: ...


def build_control_app(supervisor: FaultBackend, broker: Broker | None = None) -> Starlette:
    """The control API over ``supervisor``'s faults, with ``broker`` (default: a new one for
    the topology's topics) on ``/topics``."""
    broker = broker if broker is not None else Broker(supervisor.topology)

    def authorized(request: Request) -> bool:
        if supervisor.admin_token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {supervisor.admin_token}".encode())

    def unknown(target: str) -> Response:
        return _error(
            404,
            f"unknown service or dependency {target!r}; valid: "
            f"{', '.join(supervisor.topology.targets)}",
        )

    async def services(request: Request) -> Response:
        return JSONResponse(supervisor.describe())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def set_fault(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        target = request.path_params["target"]
        if target not in supervisor.topology.targets:
            return unknown(target)
        try:
            body = json.loads(await request.body() or b"{}")
            update = parse_update(body, virtual=target in supervisor.topology.virtual)
        except json.JSONDecodeError:
            return _error(400, "the body is not valid JSON")
        except FaultError as exc:
            return _error(400, str(exc))
        try:
            return JSONResponse(await supervisor.set_fault(target, update))
        except FaultError as exc:  # a change this backend cannot make (say so, and how)
            return _error(400, str(exc))
        except SupervisorError as exc:
            return _error(502, str(exc))

    async def clear_one(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        target = request.path_params["target"]
        if target not in supervisor.topology.targets:
            return unknown(target)
        try:
            await supervisor.clear(target)
        except SupervisorError as exc:
            return _error(502, str(exc))
        return JSONResponse(supervisor.describe_target(target))

    async def clear_all(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        try:
            await supervisor.clear()
        except SupervisorError as exc:
            return _error(502, str(exc))
        return JSONResponse(supervisor.describe())

    return Starlette(
        routes=[
            Route("/services", services, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/faults", clear_all, methods=["DELETE"]),
            Route("/faults/{target}", set_fault, methods=["POST"]),
            Route("/faults/{target}", clear_one, methods=["DELETE"]),
            *broker_routes(broker),
        ]
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _unauthorized() -> JSONResponse:
    return _error(
        401, "missing or wrong admin token: send Authorization: Bearer <token> "
        "(the CLI reads it from CONWAY_ADMIN_TOKEN)"
    )
