"""The collector's HTTP server: OTLP and Zipkin receivers, the JSON API, ``/metrics``.

Bodies are read as a stream (chunked uploads work) and refused with 413 as soon as they pass
``max_body_bytes``; a body not complete within ``body_timeout_s`` (a client trickling it) is
answered 408 and its connection closed. Decoding, ingest, snapshots and ``/metrics`` run in
worker threads so the event loop keeps answering while they hold the service lock; at most
``DECODE_CONCURRENCY`` bodies are decoded at once (decoding is CPU-bound: more would only
multiply decoded copies in memory). Admission is bounded (`Admission`): more than
``max_inflight`` receiver requests, or bodies held in memory past ``max_inflight_bytes``,
answer 503 with ``Retry-After`` (the OTLP exporters retry on it). With an ingest token, the
receivers answer 401 to a request without ``Authorization: Bearer <token>``. Every refusal is
counted by reason (`collector.limits`). Errors a client can cause answer with a message saying
what was wrong: OTLP errors as a ``google.rpc.Status`` in the request's encoding, everything
else as JSON ``{"error": message}``; no response reflects input as HTML, and every response
carries ``X-Content-Type-Options: nosniff``. The read API is GET only (405 otherwise).

Connections are bounded before any request reaches the app (`ConnectionGuard`, served with
its uvicorn protocol): at most ``MAX_CONNECTIONS`` (1024; ``--max-connections``) open, of
them at most ``MAX_IDLE_CONNECTIONS`` (512; ``--max-idle-connections``) without a request in
progress, the oldest idle one closed to make room for a new connection; a connection whose
request headers are not complete within ``HEADER_TIMEOUT_S`` (5 s; ``--header-timeout``) is
closed, and so is one idle ``KEEP_ALIVE_TIMEOUT_S`` (5 s; ``--keep-alive-timeout``) after a
response; past the connection limit with none idle a new connection is answered 503 with
``Retry-After`` and closed. So idle or slow connections, however many, never lock out ingest
or ``/healthz``: ``conway_http_rejected_total{reason="connection_limit"}`` and
``conway_http_connections_closed_total{reason}`` count what the guard refused and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from collector import otlp, wire, zipkin
from collector.exposition import IngestCounters
from collector.graph import TrafficGraph
from collector.limits import DEFAULT_LIMITS, RequestReason, SpanLimits, screen_times
from collector.model import DecodeError, DecodeResult, Edge, Node, Snapshot
from collector.service import CollectorService

# Receiver requests (OTLP + Zipkin) being read or decoded at once before answering 503;
# CollectorConfig.extra["max_inflight_requests"] overrides it.
MAX_INFLIGHT = 64
# Request bodies held in memory at once (read, waiting to be decoded, or decoding) before
# answering 503; CollectorConfig.extra["max_inflight_bytes"] overrides it.
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
# Seconds a client has to send its whole body (a trickling client gets 408 and a closed
# connection); CollectorConfig.extra["body_timeout_s"] overrides it.
BODY_TIMEOUT_S = 30.0
# Bodies decoded at once: decoding holds the GIL, so more buys no speed, only memory.
DECODE_CONCURRENCY = 2
RETRY_AFTER_S = 1
# Paths counted by name in conway_http_requests_total; others count as "other" (bounded labels).
COUNTED_PATHS = ("/v1/traces", "/api/v2/spans", "/api/graph", "/metrics", "/healthz")


class _TooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class _Overloaded(Exception):
    pass


class Admission(Collector):
    """Bounds what the receivers hold: requests in progress and the bytes of their bodies.

    Not thread-safe: used from the event loop only.
    """

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def busy(self) -> str | None:
        """Why a new request cannot start now, or None (then call `enter`)."""
        if self.requests >= self.max_requests:
            return (f"collector busy: {self.requests} requests already in progress (limit "
                    f"{self.max_requests}); retry after {RETRY_AFTER_S} s")
        return None

    def enter(self) -> None:
        self.requests += 1

    def reserve(self, n: int) -> None:
        """Account ``n`` more body bytes held; `_Overloaded` when over the byte budget."""
        if self.bytes + n > self.max_bytes:
            raise _Overloaded(
                f"collector busy: {self.bytes} bytes of request bodies already held (limit "
                f"{self.max_bytes}); retry after {RETRY_AFTER_S} s")
        self.bytes += n

    def leave(self, held: int) -> None:
        self.requests -= 1
        self.bytes -= held

    def collect(self) -> Iterator[Metric]:
        """``prometheus_client`` Collector: what is held now, next to the limits."""
        for name, doc, value in (
            ("conway_ingest_inflight_requests", "Receiver requests in progress", self.requests),
            ("conway_ingest_inflight_bytes", "Request-body bytes held by the receivers",
             self.bytes),
            ("conway_ingest_max_inflight_requests", "Limit of receiver requests in progress",
             self.max_requests),
            ("conway_ingest_max_inflight_bytes", "Limit of request-body bytes held",
             self.max_bytes),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def _round(v: float | None, digits: int = 6) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(v, digits)


def _jsonable(v: Any, depth: int = 0) -> bool:
    if depth > 6:
        return False
    if v is None or isinstance(v, str | bool | int):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list | tuple):
        return all(_jsonable(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x, depth + 1) for k, x in v.items())
    return False


def node_json(n: Node) -> dict[str, Any]:
    """A node as the API serves it: meta keys that are plain JSON first, contract keys on top."""
    out = {k: v for k, v in n.meta.items() if _jsonable(v)}
    out.update(
        id=n.id, kind=n.kind, team=n.team, health=n.health, rate_rps=_round(n.rate_rps),
        error_ratio=_round(n.error_ratio), p50_ms=_round(n.p50_ms, 3),
        p95_ms=_round(n.p95_ms, 3), p99_ms=_round(n.p99_ms, 3),
    )
    return out


def edge_json(e: Edge) -> dict[str, Any]:
    out = {k: v for k, v in e.meta.items() if _jsonable(v)}
    out.update(
        source=e.source, target=e.target, rate_rps=_round(e.rate_rps),
        error_ratio=_round(e.error_ratio), p50_ms=_round(e.p50_ms, 3),
        p95_ms=_round(e.p95_ms, 3), p99_ms=_round(e.p99_ms, 3),
        connection_type=e.connection_type, health=e.health,
    )
    return out


def graph_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "window_s": snap.window_s,
        "generated_at": snap.generated_at,
        "nodes": [node_json(snap.nodes[k]) for k in sorted(snap.nodes)],
        "edges": [edge_json(snap.edges[k]) for k in sorted(snap.edges)],
        "limits": snap.meta.get("limits", {}),
    }


def _limit_warning(graph: TrafficGraph, nodes: int, edges: int) -> str:
    """What the graph's caps refused from one request, as a sentence (or "")."""
    parts = []
    if nodes:
        parts.append(f"{nodes} spans or calls named a new node past the node limit "
                     f"(max_nodes={graph.max_nodes})")
    if edges:
        parts.append(f"{edges} calls were on a new edge past the edge limit "
                     f"(max_edges={graph.max_edges}) or to a refused node")
    if not parts:
        return ""
    return ("; ".join(parts) + "; they are counted, not graphed (see \"limits\" in /api/graph "
            "and conway_graph_dropped_* on /metrics)")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def parse_window(service: CollectorService, raw: str | None) -> float:
    """The ``window`` query parameter in seconds; ValueError with a message when invalid."""
    cfg = service.config
    if raw is None or raw == "":
        return cfg.default_window_s
    try:
        w = float(raw)
    except ValueError:
        raise ValueError(
            f"window must be a number of seconds between {cfg.bucket_s:g} and "
            f"{cfg.retention_s:g}, got {raw!r}"
        ) from None
    if not math.isfinite(w) or not cfg.bucket_s <= w <= cfg.retention_s:
        raise ValueError(
            f"window must be between {cfg.bucket_s:g} and {cfg.retention_s:g} seconds "
            f"(the retention), got {raw}"
        )
    return w


async def read_body(request: Request, limit: int, timeout_s: float | None = None,
                    admission: Admission | None = None, held: list[int] | None = None) -> bytes:
    """The whole body, refused (``_TooLarge``) as soon as it passes ``limit`` bytes, or
    (``_BodyTimeout``) when not complete within ``timeout_s``. With ``admission``, every chunk
    is reserved against its byte budget (``_Overloaded``) and added to ``held[0]``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge(f"request body of {length} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge(f"request body of more than {limit} bytes")
            if admission is not None and held is not None:
                admission.reserve(len(chunk))
                held[0] += len(chunk)
            chunks.append(chunk)

    if timeout_s is None:
        await read()
    else:
        try:
            async with asyncio.timeout(timeout_s):
                await read()
        except TimeoutError:
            raise _BodyTimeout(
                f"request body not received within {timeout_s:g} s ({size} bytes arrived); "
                f"send the whole body at once, or check the network between exporter and "
                f"collector"
            ) from None
    return b"".join(chunks)


class RequestCounter:
    """ASGI middleware counting answered requests by path and status."""

    def __init__(self, app: ASGIApp, counters: IngestCounters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        label = path if path in COUNTED_PATHS else (
            "/api/services" if path.startswith("/api/services/") else "other"
        )

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counters.request(label, message["status"])
                # No response may be sniffed into HTML, whatever text it echoes.
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, counting_send)


class Api:
    """Route handlers bound to one service."""

    def __init__(self, service: CollectorService, registry: CollectorRegistry,
                 counters: IngestCounters) -> None:
        self.service = service
        self.registry = registry
        self.counters = counters
        self.graph: TrafficGraph = service.parts["graph"]
        extra = service.config.extra
        self.admission = Admission(
            int(extra.get("max_inflight_requests", MAX_INFLIGHT)),
            int(extra.get("max_inflight_bytes", MAX_INFLIGHT_BYTES)),
        )
        self.body_timeout_s = float(extra.get("body_timeout_s", BODY_TIMEOUT_S))
        limits = extra.get("span_limits")
        self.limits: SpanLimits = limits if isinstance(limits, SpanLimits) else DEFAULT_LIMITS
        token = extra.get("ingest_token")
        self.ingest_token: bytes | None = str(token).encode() if token else None
        self.decoding = asyncio.Semaphore(int(extra.get("decode_concurrency",
                                                        DECODE_CONCURRENCY)))

    def _unauthorized(self, request: Request) -> str | None:
        """Why the request may not ingest (a message), or None when it may."""
        if self.ingest_token is None:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              self.ingest_token):
            return None
        what = "no Authorization header" if not given else "a wrong or malformed token"
        return (f"this collector needs an ingest token and the request had {what}; send "
                f"'Authorization: Bearer <token>' (OpenTelemetry SDKs: "
                f"OTEL_EXPORTER_OTLP_HEADERS=\"authorization=Bearer <token>\")")

    async def _decode_and_ingest(
        self, body: bytes, encoding: str | None, decode: Callable[[bytes], DecodeResult]
    ) -> tuple[DecodeResult, str]:
        limit = self.service.config.max_body_bytes
        window = self.limits.time_window_s

        def work() -> tuple[DecodeResult, str]:
            raw = wire.decompress(body, encoding, limit)
            result = decode(raw)
            now = self.service.clock()
            screen_times(result, now, window, otlp.MAX_ERRORS)
            g = self.graph
            with self.service.lock:
                nodes, edges = g.dropped_nodes, g.dropped_edges
                self.service.ingest(result.spans, now)
                warning = _limit_warning(g, g.dropped_nodes - nodes, g.dropped_edges - edges)
                pairing_error = g.pairer.last_error
                if pairing_error is not None:
                    warning = "; ".join(x for x in (warning, str(pairing_error)) if x)
                c = self.counters
                c.spans_received += len(result.spans)
                c.spans_rejected += result.rejected
                c.truncated_values += result.truncated_values
                c.dropped_attributes += result.dropped_attributes
                if result.reasons:
                    c.reject_spans(result.reasons)
            return result, warning

        async with self.decoding:
            return await run_in_threadpool(work)

    def _refused(self, reason: str) -> None:
        with self.service.lock:
            self.counters.reject_request(reason)

    async def _receive(
        self, request: Request, decode: Callable[[bytes], DecodeResult],
        fail: Callable[[int, str], Response],
    ) -> tuple[DecodeResult, str] | Response:
        """Admission, body, decoding and ingest shared by both receivers: the decoded result and
        a warning about limits reached (or ""), or the error response (counted by reason)."""
        denied = self._unauthorized(request)
        if denied is not None:
            self._refused(RequestReason.UNAUTHORIZED)
            response = fail(401, denied)
            response.headers["WWW-Authenticate"] = 'Bearer realm="conway-ingest"'
            return response
        busy = self.admission.busy()
        if busy is not None:
            self._refused(RequestReason.OVERLOADED)
            response = fail(503, busy)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        limit = self.service.config.max_body_bytes
        held = [0]
        self.admission.enter()
        try:
            body = await read_body(request, limit, self.body_timeout_s, self.admission, held)
            return await self._decode_and_ingest(
                body, request.headers.get("content-encoding"), decode)
        except (_TooLarge, wire.PayloadTooLarge) as exc:
            self._refused(RequestReason.TOO_LARGE)
            msg = str(exc) if isinstance(exc, wire.PayloadTooLarge) else str(
                wire.PayloadTooLarge(str(exc), limit))
            response = fail(413, msg)
            response.headers["Connection"] = "close"  # do not read the rest of a huge body
            return response
        except ClientDisconnect:
            # Nobody is left to answer; the slot and the bytes it held are freed below.
            self._refused(RequestReason.DISCONNECTED)
            return fail(400, "client disconnected before sending the whole body")
        except _BodyTimeout as exc:
            self._refused(RequestReason.BODY_TIMEOUT)
            response = fail(408, str(exc))
            response.headers["Connection"] = "close"
            return response
        except _Overloaded as exc:
            self._refused(RequestReason.OVERLOADED)
            response = fail(503, str(exc))
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except wire.UnsupportedEncoding as exc:
            self._refused(RequestReason.ENCODING)
            return fail(415, str(exc))
        except wire.UnsupportedMediaType as exc:
            self._refused(RequestReason.MEDIA_TYPE)
            return fail(415, str(exc))
        except DecodeError as exc:
            self._refused(RequestReason.MALFORMED)
            return fail(400, str(exc))
        finally:
            self.admission.leave(held[0])

    async def otlp_traces(self, request: Request) -> Response:
        media = wire.media_type(request.headers.get("content-type"))
        # Errors answer in the request's encoding; an unknown one gets JSON, readable by anyone.
        answer_media = otlp.PROTOBUF if media == otlp.PROTOBUF else otlp.JSON

        def fail(status: int, message: str) -> Response:
            return Response(otlp.encode_status(message, answer_media), status_code=status,
                            media_type=answer_media)

        if media not in (otlp.PROTOBUF, otlp.JSON) and self._unauthorized(request) is None:
            self._refused(RequestReason.MEDIA_TYPE)
            return fail(415, f"Content-Type {media or '(none)'!r} is not supported for OTLP "
                             f"traces; send {otlp.PROTOBUF} or {otlp.JSON}")
        limits = self.limits
        got = await self._receive(request, lambda raw: otlp.decode_traces(raw, media, limits),
                                  fail)
        if isinstance(got, Response):
            return got
        result, warning = got
        message = "; ".join(x for x in ("; ".join(result.errors), warning) if x)
        return Response(otlp.encode_response(result.rejected, message, media),
                        media_type=media)

    async def zipkin_spans(self, request: Request) -> Response:
        media = wire.media_type(request.headers.get("content-type"))
        if media not in ("application/json", "") and self._unauthorized(request) is None:
            self._refused(RequestReason.MEDIA_TYPE)
            return _error(415, f"Content-Type {media!r} is not supported for Zipkin spans; "
                               "send Zipkin v2 JSON as application/json")
        limits = self.limits
        got = await self._receive(request, lambda raw: zipkin.decode_spans(raw, limits),
                                  _error)
        if isinstance(got, Response):
            return got
        result, warning = got
        if result.rejected and not result.spans:
            # Nothing usable: say so with 400 (Zipkin has no partial success to report it in).
            self._refused(RequestReason.ALL_SPANS_REJECTED)
            return _error(400, f"all {result.rejected} spans were rejected: "
                               + "; ".join(result.errors))
        body: dict[str, Any] = {"accepted": len(result.spans), "rejected": result.rejected}
        if result.errors:
            body["errors"] = result.errors
        if warning:
            body["warning"] = warning
        return JSONResponse(body, status_code=202)

    async def graph_api(self, request: Request) -> Response:
        try:
            window = parse_window(self.service, request.query_params.get("window"))
        except ValueError as exc:
            return _error(400, str(exc))
        body = await run_in_threadpool(self._graph_body, window)
        return Response(body, media_type="application/json")

    def _graph_body(self, window: float) -> bytes:
        service = self.service
        return service.cached_json(("graph", window),
                                   lambda: graph_json(service.read_snapshot(window)))

    async def service_api(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            window = parse_window(self.service, request.query_params.get("window"))
        except ValueError as exc:
            return _error(400, str(exc))
        body = await run_in_threadpool(
            self.service.cached_json, ("service", name, window),
            lambda: self._service_body(name, window))
        if body == b"null":
            known = ", ".join(sorted(self.graph.kinds)[:50]) or "(none yet)"
            return _error(404, f"unknown service {name!r}; known services: {known}")
        return Response(body, media_type="application/json")

    def _service_body(self, name: str, window: float) -> dict[str, Any] | None:
        snap = self.service.read_snapshot(window)
        node = snap.nodes.get(name)
        if node is None:
            return None
        with self.service.lock:
            series = self.graph.series(name, snap.generated_at, window)
            versions = self.graph.versions_of(name)

        def peer(e: Edge, other: str) -> dict[str, Any]:
            return {"service": other, "rate_rps": _round(e.rate_rps),
                    "error_ratio": _round(e.error_ratio), "p95_ms": _round(e.p95_ms, 3),
                    "health": e.health}

        owner = node.meta.get("owner")
        return {
            "name": name,
            "kind": node.kind,
            "team": node.team,
            "health": node.health,
            "rate_rps": _round(node.rate_rps),
            "error_ratio": _round(node.error_ratio),
            "p50_ms": _round(node.p50_ms, 3),
            "p95_ms": _round(node.p95_ms, 3),
            "p99_ms": _round(node.p99_ms, 3),
            "up": node.meta.get("up"),
            "series": [
                {"t": p.t, "rate_rps": _round(p.rate_rps), "error_ratio": _round(p.error_ratio),
                 "p95_ms": _round(p.p95_ms, 3)}
                for p in series
            ],
            "callers": [peer(e, e.source) for k, e in sorted(snap.edges.items()) if k[1] == name],
            "callees": [peer(e, e.target) for k, e in sorted(snap.edges.items()) if k[0] == name],
            "versions": [
                {"version": v.version, "first_seen": v.first_seen, "last_seen": v.last_seen}
                for v in versions
            ],
            "owner": owner if _jsonable(owner) else None,
        }

    async def metrics(self, request: Request) -> Response:
        def render() -> bytes:
            # Only gathering the values needs the lock; formatting them (most of the time
            # for a large graph) happens outside it, so ingest does not wait for the text.
            with self.service.lock:
                families = list(self.registry.collect())
            return generate_latest(_Collected(families))

        body = await run_in_threadpool(self.service.cached, ("metrics",), render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        """200 ``{"status": "ok"}``; while a data-dir file cannot be written (a full disk),
        still 200 (the collector serves ingest and reads, and a restart would not free the
        disk but would lose what is waiting to be written) with ``"status": "degraded"`` and
        ``state_write_errors``: each file, SQLite's error, since when, failed writes. So too
        while a paging sink fails (``paging_errors``: each sink's last error and queue)."""
        files = self.service.parts.get("state_files")
        problems = files.problems() if files is not None else []
        pager = self.service.parts.get("pager")
        failing = [s for s in pager.status() if s["last_error"]] if pager is not None else []
        if problems or failing:
            body: dict[str, Any] = {"status": "degraded"}
            if problems:
                body["state_write_errors"] = problems
            if failing:
                # An Alertmanager or webhook that cannot be reached: pages wait in its queue.
                body["paging_errors"] = failing
            return JSONResponse(body)
        return JSONResponse({"status": "ok"})


def create_app(
    service: CollectorService, registry: CollectorRegistry, counters: IngestCounters
) -> ASGIApp:
    """The Starlette app for ``service``; other concerns' routes come after the core ones."""
    api = Api(service, registry, counters)
    registry.register(api.admission)
    routes = [
        Route("/v1/traces", api.otlp_traces, methods=["POST"]),
        Route("/api/v2/spans", api.zipkin_spans, methods=["POST"]),
        Route("/api/graph", api.graph_api, methods=["GET"]),
        Route("/api/services/{name:path}", api.service_api, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        *service.routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for start in service.on_startup:
            await start()
        try:
            yield
        finally:
            for stop in reversed(service.on_shutdown):
                await stop()

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 404/405 answers are text; make them JSON like every other error.
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            message = (f"method {request.method} is not allowed on {request.url.path}; the "
                       f"read API is GET only, ingest is POST /v1/traces or /api/v2/spans")
        elif exc.status_code == 404:
            message = (f"no such endpoint {request.url.path!r:.200}; see /api/graph, "
                       f"/api/services/NAME, /api/teams, /api/incidents, /metrics, /healthz")
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.service = service
    return RequestCounter(app, counters)


class _Collected:
    """Metric families already gathered, in the shape ``generate_latest`` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def dumps(obj: Any) -> str:
    """Stable JSON text (sorted keys) for golden files."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


# -- the connection guard: what the server holds before a request reaches the app -----------

# Connections open at once (idle ones and those with a request in progress); a new connection
# past it is answered 503 with ``Retry-After`` and closed, unless an idle one can make room.
MAX_CONNECTIONS = 1024
# Connections open at once without a request in progress (headers not complete yet, or idle
# between keep-alive requests). Past it the oldest of them is closed to make room for the new
# one, so idle or slow clients never hold the slots real requests need: a real client sends
# its headers at once and stops being idle.
MAX_IDLE_CONNECTIONS = 512
# Seconds a connection has to send a request's complete headers, counted from connecting or,
# on a kept-alive connection, from the request's first byte; then it is closed.
HEADER_TIMEOUT_S = 5.0
# Whole seconds a kept-alive connection may stay idle (no byte sent) after a response.
KEEP_ALIVE_TIMEOUT_S = 5
# Seconds a refused connection stays half-closed after its 503 so the client reads it (closing
# at once, with the client's request unread, sends a reset that can discard the answer).
REFUSED_LINGER_S = 1.0


class ConnectionGuard(Collector):
    """Bounds the connections the HTTP server holds, and counts what it closes and refuses.

    uvicorn's own ``limit_concurrency`` counts idle connections and answers every request 503
    while they stay open, which a connection that never sends a request may do for ever.
    Served with `protocol` instead, a connection is *idle* until its request's headers are
    complete and again after each response; idle ones are closed after ``header_timeout_s``
    (``conway_http_connections_closed_total{reason="header_timeout"}``) or uvicorn's keep-alive
    timeout (``reason="keep_alive_timeout"``), and past ``max_idle`` the oldest is closed to
    make room (``reason="idle_evicted"``). A connection past ``max_connections`` when none is
    idle gets a 503 with ``Retry-After`` and ``Connection: close`` before anything is read
    (``conway_http_rejected_total{reason="connection_limit"}``).

    Event loop only; ``collect`` (run from a worker thread) reads plain counts.
    """

    CLOSE_REASONS = ("header_timeout", "keep_alive_timeout", "idle_evicted")

    def __init__(self, max_connections: int = MAX_CONNECTIONS,
                 max_idle: int = MAX_IDLE_CONNECTIONS,
                 header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
        self.max_connections = max_connections
        self.max_idle = min(max_idle, max_connections)
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.idle: dict[GuardedH11Protocol, None] = {}  # oldest first
        self.rejected = 0
        self.closed = dict.fromkeys(self.CLOSE_REASONS, 0)

    def protocol(self) -> type[GuardedH11Protocol]:
        """The uvicorn protocol class (``uvicorn.Config(http=...)``) serving under this guard."""
        guard = self

        class Guarded(GuardedH11Protocol):
            pass

        Guarded.guard = guard
        return Guarded

    def admit(self) -> bool:
        """Whether a new connection may be served (then it counts as open and idle), closing
        the oldest idle connection to make room when a limit is reached."""
        if self.idle and (len(self.idle) >= self.max_idle or self.open >= self.max_connections):
            next(iter(self.idle)).close_idle("idle_evicted")
        if self.open >= self.max_connections:
            self.rejected += 1
            return False
        self.open += 1
        return True

    def refusal(self) -> bytes:
        body = json.dumps({"error": f"collector busy: {self.open} connections open (limit "
                                    f"{self.max_connections}); retry after {RETRY_AFTER_S} s"})
        return (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_S}\r\n"
                f"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}").encode()

    def collect(self) -> Iterator[Metric]:
        """``prometheus_client`` Collector: refusals and closes, connections held, limits."""
        rejected = CounterMetricFamily(
            "conway_http_rejected", "Connections answered 503 before a request was read, by "
            "reason", labels=["reason"])
        rejected.add_metric(["connection_limit"], self.rejected)
        yield rejected
        closed = CounterMetricFamily(
            "conway_http_connections_closed", "Connections closed by the collector without a "
            "request in progress, by reason", labels=["reason"])
        for reason, n in list(self.closed.items()):
            closed.add_metric([reason], n)
        yield closed
        for name, doc, value in (
            ("conway_http_connections_open", "Connections open", self.open),
            ("conway_http_connections_idle", "Connections open without a request in progress",
             len(self.idle)),
            ("conway_http_max_connections", "Limit of connections open", self.max_connections),
            ("conway_http_max_idle_connections", "Limit of idle connections open",
             self.max_idle),
            ("conway_http_header_timeout_seconds", "Seconds to send a request's headers",
             self.header_timeout_s),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a `ConnectionGuard` (see there); use
    `ConnectionGuard.protocol`, which binds ``guard``."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = "new"  # then "refused", or "idle" / "active" until "closed"
        self._timer: asyncio.TimerHandle | None = None
        self._cycle_seen: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit():
            self._state = "refused"
            self.transport = transport
            transport.write(self.guard.refusal())
            if transport.can_write_eof():
                transport.write_eof()
            self._timer = self.loop.call_later(REFUSED_LINGER_S, transport.close)
            return
        super().connection_made(transport)
        self._go_idle()
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._state == "refused":
            return  # answered already; only waiting for the client to read it
        if self._state == "idle" and self._timer is None:
            self._start_header_timer()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self._state == "idle" and self.cycle is not self._cycle_seen:
            self._go_active()  # headers complete: the request is the app's now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._state == "active" and not self.transport.is_closing():
            if self.cycle is self._cycle_seen:
                self._go_idle()  # uvicorn's keep-alive timer runs until the next byte
            else:
                self._cycle_seen = self.cycle  # a pipelined request started at once

    def timeout_keep_alive_handler(self) -> None:
        if self._state == "idle" and not self.transport.is_closing():
            self.guard.closed["keep_alive_timeout"] += 1
            self._release()
        super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == "refused":
            self._cancel_timer()
            return
        self._release()
        super().connection_lost(exc)

    def close_idle(self, reason: str) -> None:
        """Close this idle connection, counting why."""
        self.guard.closed[reason] += 1
        self._release()
        self.transport.close()

    def _go_idle(self) -> None:
        self._state = "idle"
        self.guard.idle[self] = None

    def _go_active(self) -> None:
        self._state = "active"
        self._cycle_seen = self.cycle
        self.guard.idle.pop(self, None)
        self._cancel_timer()

    def _start_header_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self.guard.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        self._timer = None
        if self._state == "idle" and not self.transport.is_closing():
            self.close_idle("header_timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        """No longer counted (idempotent): closing, or closed."""
        self._cancel_timer()
        if self._state in ("idle", "active"):
            self.guard.idle.pop(self, None)
            self.guard.open -= 1
            self._state = "closed"
