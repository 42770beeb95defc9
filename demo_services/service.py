"""One demo service: a Starlette app built from its entry in the topology.

Each inbound request runs inside a SERVER span (W3C ``traceparent`` extracted from the request),
applies the service's injected faults, then makes the route's calls in order, each inside a
CLIENT span (``traceparent`` injected; databases are simulated with a short sleep). A failed
required call fails the request (502; 503 when the dependency timed out or refused the
connection); a failed optional call is replaced by a fallback and the request still succeeds.
Responses carry a W3C ``traceresponse`` header naming the trace and the SERVER span.

Besides its routes the service answers ``GET /healthz``, ``GET /metrics`` and the admin API
``GET /admin/faults``, ``POST|DELETE /admin/faults/{target}``, ``DELETE /admin/faults``
(target: the service itself or a virtual dependency it calls; mutating calls need
``Authorization: Bearer <token>`` when a token is configured). ``down`` is not handled here: the
supervisor stops the process. ``cpu_hog`` runs that many CPU-burning threads in this process
(a noisy neighbour slowing the whole host, see ``demo_services.cpuhog``) until it is cleared or
the service shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from demo_services.cpuhog import CpuHog
from demo_services.defaults import HOST, peer_host
from demo_services.faults import (
    Fault,
    FaultError,
    FaultEvidence,
    apply_update,
    fault_from_json,
    parse_update,
)
from demo_services.mesh import PEER_HEADER, Sidecar, mesh_from_env, untraced_from_env
from demo_services.messaging import Producer, broker_from_env, consuming
from demo_services.telemetry import ServiceMetrics, Tracing
from demo_services.topology import CallSpec, RouteSpec, ServiceSpec, Topology

_propagator = TraceContextTextMapPropagator()
# Statuses a caller answers when a required dependency fails.
STATUS_DEPENDENCY_FAILED = 502
STATUS_DEPENDENCY_UNAVAILABLE = 503
_UNAVAILABLE = ("timeout", "connection_refused")
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(slots=True)
class CallOutcome:
    ok: bool
    error_type: str | None = None


class DemoService:
    """The state of one service process: its spec, faults, telemetry and HTTP client."""

    def __init__(
        self,
        spec: ServiceSpec,
        topology: Topology,
        collector: str,
        admin_token: str | None = None,
        rng: random.Random | None = None,
        peer_host_template: str | None = None,
    ) -> None:
        self.spec = spec
        self.peer_host_template = peer_host_template
        self.topology = topology
        self.admin_token = admin_token or None
        self.rng = rng or random.Random()
        self.fault = Fault()
        self.virtual_faults: dict[str, Fault] = {
            t: Fault() for t in spec.dependencies() if t in topology.virtual
        }
        self.cpu_hog = CpuHog(f"{spec.name}-cpu-hog")
        # When a fault failed, slowed or refused a request here (GET /admin/faults).
        self.evidence = FaultEvidence()
        self.tracing = Tracing(spec.name, spec.version, collector)
        self.metrics = ServiceMetrics(spec.name, spec.version)
        # --mesh: the series a sidecar of that mesh would report, on this /metrics (mesh.py);
        # --untraced: this service sends no spans (nor trace context), as an uninstrumented one.
        mesh = mesh_from_env()
        self.sidecar = Sidecar(mesh, spec.name, self.metrics.registry) if mesh else None
        self.traced = spec.name not in untraced_from_env()
        # trust_env=False: proxy variables must never reroute loopback calls between services.
        self.client = httpx.AsyncClient(trust_env=False)
        self.producer = Producer(self, broker_from_env())

    # ---- faults -------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self.tracing.version

    def set_fault(self, target: str, fault: Fault) -> None:
        if target == self.spec.name:
            self.fault = fault
            version = fault.version or self.spec.version
            if self.tracing.set_version(version):
                self.metrics.set_version(version)
            self.cpu_hog.set(fault.cpu_hog)
        else:
            self.virtual_faults[target] = fault

    def fault_of(self, target: str) -> Fault:
        return self.fault if target == self.spec.name else self.virtual_faults[target]

    def load_faults(self, state: dict[str, Any]) -> None:
        """Apply a ``{target: fault-json}`` mapping (how the supervisor starts a process)."""
        for target, body in state.items():
            if target == self.spec.name or target in self.virtual_faults:
                fault = fault_from_json(body, virtual=target != self.spec.name)
                # `down` belongs to the supervisor: a process that runs is up.
                self.set_fault(target, replace(fault, down=False))

    # ---- request handling ---------------------------------------------------------------

    def tracer(self) -> trace.Tracer:
        """The current version's tracer (a no-op one for an untraced service)."""
        return (self.tracing.provider.get_tracer("demo_services") if self.traced
                else trace.NoOpTracer())

    async def handle(self, request: Request, route: RouteSpec) -> Response:
        started = time.perf_counter()
        parent = _propagator.extract(carrier=dict(request.headers))
        tracer = self.tracer()
        span = tracer.start_span(
            f"{route.method} {route.path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": route.method,
                "http.route": route.path,
                "url.path": request.url.path,
                "url.scheme": "http",
                "server.address": HOST,
                "server.port": self.spec.port,
            },
        )
        faulted = False  # this process' own fault failed or slowed the request
        with trace.use_span(span, end_on_exit=False):
            try:
                status, body, faulted = await self._serve(request, route, tracer)
            except Exception as exc:  # a bug in a demo service must still end its span
                span.record_exception(exc)
                status, body = 500, {"error": f"{self.spec.name}: {type(exc).__name__}"}
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(StatusCode.ERROR, body.get("error"))
        span.end()
        if faulted:
            self.evidence.record(self.spec.name)
        elapsed = time.perf_counter() - started
        labels = (route.method, route.path, str(status))
        self.metrics.server_requests.labels(*labels).inc()
        self.metrics.server_duration.labels(*labels).observe(elapsed)
        if self.sidecar is not None:
            self.sidecar.inbound(request.headers.get(PEER_HEADER), status, elapsed * 1000)
        ctx = span.get_span_context()
        headers = {"traceresponse": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"}
        return JSONResponse(body, status_code=status, headers=headers)

    async def _serve(
        self, request: Request, route: RouteSpec, tracer: trace.Tracer
    ) -> tuple[int, dict[str, Any], bool]:
        """The answer, and whether this service's own fault failed or slowed it."""
        fault = self.fault
        slowed = fault.latency_ms > 0
        if slowed:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.error_rate > 0 and self.rng.random() < fault.error_rate:
            return 500, {"error": f"{self.spec.name} {self.version}: injected failure"}, True
        if self.spec.work_ms > 0:
            await asyncio.sleep(self.spec.work_ms * self.rng.uniform(0.5, 1.5) / 1000)
        results: dict[str, str] = {}
        params = {k: str(v) for k, v in request.path_params.items()}
        for call in route.calls:
            if call.kind == "db":
                outcome = await self._call_db(call, tracer)
            else:
                outcome = await self._call_service(call, params, tracer)
            if outcome.ok:
                results[call.target] = "ok"
            elif not call.required:
                results[call.target] = "fallback"
            else:
                status = (
                    STATUS_DEPENDENCY_UNAVAILABLE
                    if outcome.error_type in _UNAVAILABLE
                    else STATUS_DEPENDENCY_FAILED
                )
                return status, {"error": f"{call.target} failed: {outcome.error_type}"}, slowed
        for topic in route.publishes:
            # Published after the calls succeeded; a failed publish fails its PRODUCER span
            # (the collector then blames the queue), not the request.
            sent = await self.producer.send(
                topic, tracer, {"from": self.spec.name, "route": f"{route.method} {route.path}"})
            results[topic] = "published" if sent else "not published"
        return 200, {
            "service": self.spec.name,
            "version": self.version,
            "route": f"{route.method} {route.path}",
            "dependencies": results,
        }, slowed

    async def _call_service(
        self, call: CallSpec, params: dict[str, str], tracer: trace.Tracer
    ) -> CallOutcome:
        peer = self.topology.services[call.target]
        # Path parameters pass through by name ({id} -> the inbound {id}), else a sample value.
        path = _PARAM.sub(lambda m: params.get(m.group(1), "1"), call.path)
        host = peer_host(self.peer_host_template, call.target)
        url = f"http://{host}:{peer.port}{path}"
        started = time.perf_counter()
        span = tracer.start_span(
            f"{call.method} {call.path}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": call.method,
                "server.address": host,
                "server.port": peer.port,
                "url.full": url,
                "peer.service": call.target,
            },
        )
        status_code: int | None = None
        error: str | None = None
        with trace.use_span(span, end_on_exit=False):
            headers: dict[str, str] = {}
            _propagator.inject(headers)
            if self.sidecar is not None:
                headers[PEER_HEADER] = self.spec.name
            try:
                response = await self.client.request(
                    call.method, url, headers=headers, timeout=call.timeout_ms / 1000
                )
                status_code = response.status_code
                if status_code >= 400:
                    error = str(status_code)
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.ConnectError:
                error = "connection_refused"
                self.evidence.record(call.target)  # the peer is down: its fault shows here
            except httpx.HTTPError as exc:
                error = type(exc).__name__
        if status_code is not None:
            span.set_attribute("http.response.status_code", status_code)
        if self.sidecar is not None:
            self.sidecar.outbound(call.target, status_code, error,
                                  (time.perf_counter() - started) * 1000)
        return self._finish_client(span, call.target, started, error, str(status_code))

    async def _call_db(self, call: CallSpec, tracer: trace.Tracer) -> CallOutcome:
        db = self.topology.virtual[call.target]
        fault = self.virtual_faults.get(call.target, Fault())
        attributes: dict[str, str] = {
            "db.system": db.db_system,
            "db.operation.name": call.operation,
        }
        if db.db_namespace:
            attributes["db.namespace"] = db.db_namespace
        name = f"{call.operation} {db.db_namespace}" if db.db_namespace else call.operation
        started = time.perf_counter()
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        error: str | None = None
        faulted = fault.down or fault.latency_ms > 0
        delay_s = (db.latency_ms * self.rng.uniform(0.5, 1.5) + fault.latency_ms) / 1000
        timeout_s = call.timeout_ms / 1000
        if fault.down:
            await asyncio.sleep(0.001)
            error = "connection_refused"
        elif delay_s > timeout_s:
            await asyncio.sleep(timeout_s)
            error = "timeout"
        else:
            await asyncio.sleep(delay_s)
            if fault.error_rate > 0 and self.rng.random() < fault.error_rate:
                error = "db_error"
                faulted = True
        outcome = self._finish_client(span, call.target, started, error, "ok")
        if faulted:
            self.evidence.record(call.target)
        return outcome

    def _finish_client(
        self, span: Span, peer: str, started: float, error: str | None, ok_status: str
    ) -> CallOutcome:
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(StatusCode.ERROR, f"{peer}: {error}")
        span.end()
        status = ok_status if error is None else error
        self.metrics.client_requests.labels(peer, status).inc()
        self.metrics.client_duration.labels(peer, status).observe(time.perf_counter() - started)
        return CallOutcome(ok=error is None, error_type=error)

    # ---- admin ----------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        if self.admin_token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.admin_token}".encode())

    def admin_state(self) -> dict[str, Any]:
        return {
            "service": self.spec.name,
            "version": self.version,
            "fault": self.fault.to_json(),
            "virtual": {name: f.to_json() for name, f in self.virtual_faults.items()},
            "evidence": self.evidence.to_json(),
        }

    async def aclose(self) -> None:
        self.cpu_hog.stop()  # first: the hog would compete with the final span export
        await self.client.aclose()
        await asyncio.to_thread(self.tracing.shutdown)


def build_app(service: DemoService) -> Starlette:
    """The service's ASGI app: its topology routes plus health, metrics and admin."""

    def handler(route: RouteSpec) -> Any:
        async def endpoint(request: Request) -> Response:
            return await service.handle(request, route)

        return endpoint

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "service": service.spec.name, "version": service.version,
             "pid": os.getpid()}
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def get_faults(request: Request) -> Response:
        return JSONResponse(service.admin_state())

    async def change_fault(request: Request) -> Response:
        if not service.authorized(request):
            return _error(401, "missing or wrong admin token: send Authorization: Bearer <token>")
        target = request.path_params["target"]
        valid = [service.spec.name, *service.virtual_faults]
        if target not in valid:
            return _error(404, f"unknown fault target {target!r} here; valid: {valid}")
        if request.method == "DELETE":
            service.set_fault(target, Fault())
            return JSONResponse(service.admin_state())
        try:
            body = json.loads(await request.body() or b"{}")
            update = parse_update(body, virtual=target != service.spec.name)
        except json.JSONDecodeError:
            return _error(400, "the body is not valid JSON")
        except FaultError as exc:
            return _error(400, str(exc))
        if update.get("down") and target == service.spec.name:
            return _error(
                400,
                "down is applied by the supervisor (it stops the process): use the control API "
                "or `python -m demo_services fault NAME --down`",
            )
        return _set(target, update)

    def _set(target: str, update: dict[str, Any]) -> Response:
        service.set_fault(target, apply_update(service.fault_of(target), update))
        return JSONResponse(service.admin_state())

    async def clear_faults(request: Request) -> Response:
        if not service.authorized(request):
            return _error(401, "missing or wrong admin token: send Authorization: Bearer <token>")
        for target in [service.spec.name, *service.virtual_faults]:
            service.set_fault(target, Fault())
        return JSONResponse(service.admin_state())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with consuming(service):  # its batch consumers, if it has any
            yield
        await service.aclose()

    routes = [
        Route(r.path, handler(r), methods=[r.method], name=f"{r.method} {r.path}")
        for r in service.spec.routes
    ]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/faults", get_faults, methods=["GET"]),
        Route("/admin/faults", clear_faults, methods=["DELETE"]),
        Route("/admin/faults/{target}", change_fault, methods=["POST", "DELETE"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
