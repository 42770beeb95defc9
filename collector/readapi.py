"""The read API: ``/api/graph`` (``?at=`` for a past moment), ``/api/history``,
``/api/services/NAME``, ``/metrics`` and ``/healthz``.

GET only (anything else answers 405, see `collector.errors`). Snapshots and ``/metrics`` are
built in worker threads so the event loop keeps answering while they hold the service lock.
Errors answer JSON ``{"error": message}``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.apijson import graph_json, jsonable, peer_json, rounded
from collector.errors import error
from collector.graph import TrafficGraph
from collector.history import (
    HealthLog,
    HistoryRange,
    check_at,
    history_range,
    iso_utc,
    parse_at,
    past_window,
)
from collector.service import CollectorService
from collector.stats import COARSE_FACTOR, FINE_BUCKETS

# The read API's paths counted by name in conway_http_requests_total (see edge.RequestCounter).
COUNTED_PATHS = ("/api/graph", "/metrics", "/healthz")


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


class ReadApi:
    """The read API's route handlers bound to one service."""

    def __init__(self, service: CollectorService, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry
        self.graph: TrafficGraph = service.parts["graph"]

    def routes(self) -> list[Route]:
        return [
            Route("/api/graph", self.graph_api, methods=["GET"]),
            Route("/api/history", self.history_api, methods=["GET"]),
            Route("/api/services/{name:path}", self.service_api, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
        ]

    async def graph_api(self, request: Request) -> Response:
        try:
            window = parse_window(self.service, request.query_params.get("window"))
            raw_at = request.query_params.get("at")
            at = parse_at(raw_at) if raw_at else None
        except ValueError as exc:
            return error(400, str(exc))
        if at is not None:
            return await run_in_threadpool(self._graph_at, at, window)
        body = await run_in_threadpool(self._graph_body, window)
        return Response(body, media_type="application/json")

    def _range(self, window: float) -> HistoryRange:
        cfg = self.service.config
        archive = self.service.parts.get("archive")
        return history_range(self.service.clock(), self.graph.started_at, cfg.retention_s,
                             window, archive.span() if archive is not None else None)

    def _graph_at(self, at: float, window: float) -> Response:
        """The graph as it was at ``at`` (`collector.history`), or beyond the retained
        statistics the archived minute nearest it (`collector.archive`); 400 with the range
        when ``at`` lies outside it. Built for each reader (never shared with live reads)."""
        cfg = self.service.config
        rng = self._range(window)
        try:
            check_at(at, rng)
        except ValueError as exc:
            return JSONResponse({"error": str(exc), "history": rng.json()}, status_code=400)
        if rng.archived_until is not None and at < rng.archived_until:
            return self._archived_at(at, window, rng)
        read = past_window(at, window, rng.end, cfg.bucket_s, cfg.retention_s)
        snap = self.service.snapshot(read, at, historical=True)
        out = graph_json(snap)
        out["history"] = rng.json()
        if read != window:
            out["window_requested_s"] = window
        body = json.dumps(out, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return Response(body.encode("utf-8"), media_type="application/json")

    def _archived_at(self, at: float, window: float, rng: HistoryRange) -> Response:
        archive = self.service.parts["archive"]
        found = archive.read(at)
        if found is None:
            before, after = archive.nearest(at)
            gap = " and ".join(f"{what} {m:.0f} ({iso_utc(m)})" for what, m in
                               (("the minute ending", before), ("the one ending", after))
                               if m is not None)
            return JSONResponse(
                {"error": f"at={at:.3f} ({iso_utc(at)}) is older than the retained statistics "
                          f"and no archived minute ends within {archive.every_s:g} s of it "
                          f"(the collector was stopped, or could not write its archive, "
                          f"then); the nearest archived: {gap or 'none readable'}",
                 "history": rng.json()}, status_code=400)
        minute, out = found
        # What became of the incidents open then is today's news, not the minute's.
        manager = getattr(self.service.parts.get("diagnosis"), "manager", None)
        if manager is not None:
            with self.service.lock:
                for inc in out.get("incidents") or []:
                    now_inc = manager.get(str(inc.get("id"))) if isinstance(inc, dict) else None
                    if now_inc is not None:
                        inc["status_now"] = now_inc.status
                        inc["resolved_at"] = now_inc.resolved_at
        out["history"] = rng.json()
        out["archived"] = {"at": minute, "window_s": archive.every_s}
        if window != archive.every_s:
            out["window_requested_s"] = window
        body = json.dumps(out, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return Response(body.encode("utf-8"), media_type="application/json")

    async def history_api(self, request: Request) -> Response:
        """``GET /api/history[?window=S]``: the range ``/api/graph?at=`` can show, and what
        the health log holds."""
        try:
            window = parse_window(self.service, request.query_params.get("window"))
        except ValueError as exc:
            return error(400, str(exc))
        diagnosis = self.service.parts.get("diagnosis")
        archive = self.service.parts.get("archive")
        log = getattr(diagnosis, "log", None)
        with self.service.lock:
            stats = log.stats() if isinstance(log, HealthLog) else None
        cfg = self.service.config
        return JSONResponse({"history": self._range(window).json(),
                             "retention_s": cfg.retention_s, "bucket_s": cfg.bucket_s,
                             "fine_s": FINE_BUCKETS * cfg.bucket_s,
                             "coarse_bucket_s": COARSE_FACTOR * cfg.bucket_s,
                             "health_log": stats,
                             "archive": archive.stats() if archive is not None else None})

    def _graph_body(self, window: float) -> bytes:
        service = self.service
        return service.cached_json(("graph", window),
                                   lambda: graph_json(service.read_snapshot(window)))

    async def service_api(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            window = parse_window(self.service, request.query_params.get("window"))
        except ValueError as exc:
            return error(400, str(exc))
        body = await run_in_threadpool(
            self.service.cached_json, ("service", name, window),
            lambda: self._service_body(name, window))
        if body == b"null":
            known = ", ".join(sorted(self.graph.kinds)[:50]) or "(none yet)"
            return error(404, f"unknown service {name!r}; known services: {known}")
        return Response(body, media_type="application/json")

    def _service_body(self, name: str, window: float) -> dict[str, Any] | None:
        snap = self.service.read_snapshot(window)
        node = snap.nodes.get(name)
        if node is None:
            return None
        with self.service.lock:
            series = self.graph.series(name, snap.generated_at, window)
            versions = self.graph.versions_of(name)

        owner = node.meta.get("owner")
        return {
            "name": name,
            "kind": node.kind,
            "team": node.team,
            "health": node.health,
            "rate_rps": rounded(node.rate_rps),
            "error_ratio": rounded(node.error_ratio),
            "p50_ms": rounded(node.p50_ms, 3),
            "p95_ms": rounded(node.p95_ms, 3),
            "p99_ms": rounded(node.p99_ms, 3),
            "up": node.meta.get("up"),
            "series": [
                {"t": p.t, "rate_rps": rounded(p.rate_rps), "error_ratio": rounded(p.error_ratio),
                 "p95_ms": rounded(p.p95_ms, 3)}
                for p in series
            ],
            "callers": [peer_json(e, e.source) for k, e in sorted(snap.edges.items())
                        if k[1] == name],
            "callees": [peer_json(e, e.target) for k, e in sorted(snap.edges.items())
                        if k[0] == name],
            "versions": [
                {"version": v.version, "first_seen": v.first_seen, "last_seen": v.last_seen}
                for v in versions
            ],
            "owner": owner if jsonable(owner) else None,
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
        while a paging sink fails (``paging_errors``: each sink's last error and queue), and
        while the mesh Prometheus cannot be queried (``mesh_source``)."""
        files = self.service.parts.get("state_files")
        problems = files.problems() if files is not None else []
        pager = self.service.parts.get("pager")
        failing = [s for s in pager.status() if s["last_error"]] if pager is not None else []
        mesh = self.service.parts.get("mesh")
        mesh_problem = mesh.problem() if mesh is not None else None
        if problems or failing or mesh_problem:
            body: dict[str, Any] = {"status": "degraded"}
            if mesh_problem:
                # The mesh's Prometheus cannot be queried: ingest goes on, mesh-only calls
                # are missing from the graph.
                body["mesh_source"] = mesh_problem
            if problems:
                body["state_write_errors"] = problems
            if failing:
                # An Alertmanager or webhook that cannot be reached: pages wait in its queue.
                body["paging_errors"] = failing
            return JSONResponse(body)
        return JSONResponse({"status": "ok"})


class _Collected:
    """Metric families already gathered, in the shape ``generate_latest`` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def dumps(obj: Any) -> str:
    """Stable JSON text (sorted keys) for golden files."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
