"""The collector's HTTP server: OTLP and Zipkin receivers, the JSON API, ``/metrics``.

Bodies are read as a stream (chunked uploads work) and refused with 413 as soon as they pass
``max_body_bytes``. Decoding, ingest, snapshots and ``/metrics`` run in worker threads so the
event loop keeps answering while they hold the service lock. More than ``max_inflight`` receiver
requests at once answer 503 with ``Retry-After`` (the OTLP exporters retry). Errors a client can
cause answer with a message saying what was wrong: OTLP errors as a ``google.rpc.Status`` in
the request's encoding, API errors as ``{"error": message}``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector import otlp, wire, zipkin
from collector.exposition import IngestCounters
from collector.graph import TrafficGraph
from collector.model import DecodeError, DecodeResult, Edge, Node, Snapshot
from collector.service import CollectorService

# Receiver requests (OTLP + Zipkin) being read or decoded at once before answering 503;
# CollectorConfig.extra["max_inflight_requests"] overrides it.
MAX_INFLIGHT = 64
RETRY_AFTER_S = 1
# Paths counted by name in conway_http_requests_total; others count as "other" (bounded labels).
COUNTED_PATHS = ("/v1/traces", "/api/v2/spans", "/api/graph", "/metrics", "/healthz")


class _TooLarge(Exception):
    pass


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
    }


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


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (``_TooLarge``) as soon as it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge(f"request body of {length} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"request body of more than {limit} bytes")
        chunks.append(chunk)
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
        self.max_inflight = int(service.config.extra.get("max_inflight_requests", MAX_INFLIGHT))
        self.inflight = 0

    def _overloaded(self) -> str | None:
        if self.inflight < self.max_inflight:
            return None
        return (f"collector busy: {self.inflight} requests already in progress (limit "
                f"{self.max_inflight}); retry after {RETRY_AFTER_S} s")

    async def _decode_and_ingest(
        self, body: bytes, encoding: str | None, decode: Callable[[bytes], DecodeResult]
    ) -> DecodeResult:
        limit = self.service.config.max_body_bytes

        def work() -> DecodeResult:
            raw = wire.decompress(body, encoding, limit)
            result = decode(raw)
            self.service.ingest(result.spans)
            with self.service.lock:
                self.counters.spans_received += len(result.spans)
                self.counters.spans_rejected += result.rejected
            return result

        return await run_in_threadpool(work)

    async def otlp_traces(self, request: Request) -> Response:
        media = wire.media_type(request.headers.get("content-type"))
        # Errors answer in the request's encoding; an unknown one gets JSON, readable by anyone.
        answer_media = otlp.PROTOBUF if media == otlp.PROTOBUF else otlp.JSON

        def fail(status: int, message: str) -> Response:
            return Response(otlp.encode_status(message, answer_media), status_code=status,
                            media_type=answer_media)

        if media not in (otlp.PROTOBUF, otlp.JSON):
            return fail(415, f"Content-Type {media or '(none)'!r} is not supported for OTLP "
                             f"traces; send {otlp.PROTOBUF} or {otlp.JSON}")
        busy = self._overloaded()
        if busy is not None:
            response = fail(503, busy)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        self.inflight += 1
        try:
            body = await read_body(request, self.service.config.max_body_bytes)
            result = await self._decode_and_ingest(
                body, request.headers.get("content-encoding"),
                lambda raw: otlp.decode_traces(raw, media),
            )
        except (_TooLarge, wire.PayloadTooLarge) as exc:
            msg = str(exc) if isinstance(exc, wire.PayloadTooLarge) else str(
                wire.PayloadTooLarge(str(exc), self.service.config.max_body_bytes))
            return fail(413, msg)
        except (wire.UnsupportedEncoding, wire.UnsupportedMediaType) as exc:
            return fail(415, str(exc))
        except DecodeError as exc:
            return fail(400, str(exc))
        finally:
            self.inflight -= 1
        message = "; ".join(result.errors)
        pairing_error = self.graph.pairer.last_error
        if pairing_error is not None:
            message = "; ".join(x for x in (message, str(pairing_error)) if x)
        return Response(otlp.encode_response(result.rejected, message, media),
                        media_type=media)

    async def zipkin_spans(self, request: Request) -> Response:
        media = wire.media_type(request.headers.get("content-type"))
        if media not in ("application/json", ""):
            return _error(415, f"Content-Type {media!r} is not supported for Zipkin spans; "
                               "send Zipkin v2 JSON as application/json")
        busy = self._overloaded()
        if busy is not None:
            return JSONResponse({"error": busy}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        self.inflight += 1
        try:
            body = await read_body(request, self.service.config.max_body_bytes)
            await self._decode_and_ingest(
                body, request.headers.get("content-encoding"), zipkin.decode_spans
            )
        except (_TooLarge, wire.PayloadTooLarge) as exc:
            return _error(413, str(exc) + f" (limit {self.service.config.max_body_bytes} bytes)")
        except wire.UnsupportedEncoding as exc:
            return _error(415, str(exc))
        except DecodeError as exc:
            return _error(400, str(exc))
        finally:
            self.inflight -= 1
        return Response(status_code=202)

    async def graph_api(self, request: Request) -> Response:
        try:
            window = parse_window(self.service, request.query_params.get("window"))
        except ValueError as exc:
            return _error(400, str(exc))
        snap = await run_in_threadpool(self.service.snapshot, window)
        return JSONResponse(graph_json(snap))

    async def service_api(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            window = parse_window(self.service, request.query_params.get("window"))
        except ValueError as exc:
            return _error(400, str(exc))
        body = await run_in_threadpool(self._service_body, name, window)
        if body is None:
            known = ", ".join(sorted(self.graph.kinds)[:50]) or "(none yet)"
            return _error(404, f"unknown service {name!r}; known services: {known}")
        return JSONResponse(body)

    def _service_body(self, name: str, window: float) -> dict[str, Any] | None:
        snap = self.service.snapshot(window)
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
            with self.service.lock:
                return generate_latest(self.registry)

        return Response(await run_in_threadpool(render), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def create_app(
    service: CollectorService, registry: CollectorRegistry, counters: IngestCounters
) -> ASGIApp:
    """The Starlette app for ``service``; other concerns' routes come after the core ones."""
    api = Api(service, registry, counters)
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

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return RequestCounter(app, counters)


def dumps(obj: Any) -> str:
    """Stable JSON text (sorted keys) for golden files."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
