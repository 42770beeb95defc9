"""The service-mesh source: the calls an Istio or Linkerd mesh's sidecars report, from Prometheus.

With ``--mesh-prometheus URL`` a background task queries that Prometheus every ``poll_s``
seconds (``config.mesh``) for whichever of the two meshes' series exist, over the last
``window_s`` seconds, and keeps the latest *mesh view*: workloads (nodes) and the calls
between them (edges) with their rate, error ratio and p50/p95/p99. The appender joins that
view with the trace graph on every snapshot, reading only memory (no I/O):

- a call seen by both is one edge: the trace figures stay, the mesh's are added under
  ``edge.meta["mesh"]`` (the details panel shows both); a call seen only by the mesh becomes an
  edge with the mesh's figures and ``meta["traced"] = False`` (drawn distinctly);
- a workload the mesh sees that sends no spans gets ``meta["traced"] = False`` and
  ``meta["no_traces"] = True``: a coverage gap; one not in the trace graph at all is added;
- each mesh node carries its workload names and app label (``meta["mesh"]["workloads"]``,
  ``["apps"]``) for ownership's ``backstage.io/kubernetes-id`` match;
- a destination whose calls nearly all fail with Envoy's ``UH`` (no healthy upstream) or
  ``UF`` (upstream connection failure) has ``meta["mesh_down"]`` and, unless a scrape says
  otherwise, ``meta["up"] = False``: diagnosis reads it as ``down``.

Istio (names and labels from https://istio.io/latest/docs/reference/config/metrics/):
``istio_requests_total`` and ``istio_request_duration_milliseconds_bucket`` with
``reporter``, ``source_workload``, ``source_app``, ``source_canonical_service``,
``destination_workload``, ``destination_app``, ``destination_canonical_service``,
``destination_service_name``, ``response_code`` and ``response_flags`` (Envoy's
``%RESPONSE_FLAGS%``, ``-`` for none). Each call is reported twice, by the client's sidecar
(``reporter="source"``) and the server's (``reporter="destination"``). As Kiali does
(``graph/telemetry/istio/istio.go`` in kiali/kiali: traffic from a known source workload is read
with ``reporter="source"``, traffic from ``source_workload="unknown"`` — no client sidecar —
with ``reporter="destination"``), each edge takes one view: ``source`` when the source workload
is known, else ``destination``; when the preferred view has no series (its proxy is not
scraped) the other is used. The view used is in ``edge.meta["mesh"]["reporter"]``. A call
fails when its ``response_code`` is 5xx or its ``response_flags`` name a failure
(``ERROR_FLAGS``).

Linkerd (names and labels from https://linkerd.io/2/reference/proxy-metrics/):
``response_total`` and ``response_latency_ms_bucket`` with ``direction``, ``classification``,
``status_code``, ``deployment`` and ``dst_deployment``. As Linkerd viz's edges do
(``viz/metrics-api/edges.go`` in linkerd/linkerd2: ``direction="outbound"`` series summed by
``deployment`` and ``dst_deployment``), a call is read from the client's outbound series (the
one that names both ends); it fails when ``classification="failure"``. A deployment's node
is its name without a version suffix (``payment-v2`` -> ``payment``), as its app would be
named.

Quantiles come from the histograms' bucket increases over the window, interpolated as
Prometheus' ``histogram_quantile`` does (one bucket query per mesh rather than one per
quantile). The view is capped at ``max_nodes`` / ``max_edges`` (busiest first); what is left
out is counted. Failures (Prometheus down, an error answer, a malformed body) are counted,
kept as ``last_error`` and reported degraded on ``/healthz``; the last good view is kept for
at most ``2 * window_s``. Nothing here touches ingest.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.config import CollectorConfig, MeshConfig
from collector.model import Edge, Node, Snapshot
from collector.service import CollectorService

ISTIO = "istio"
LINKERD = "linkerd"
UNKNOWN = "unknown"  # Istio's value for a missing workload, app or service
# Envoy response flags that mean the call failed (see Envoy's access-log %RESPONSE_FLAGS%):
# no healthy upstream, upstream connection failure / termination / overflow / timeout /
# retry limit, no route, local reset, downstream termination, no cluster.
ERROR_FLAGS = frozenset({"UH", "UF", "UO", "URX", "UT", "UC", "UR", "NR", "LR", "DC", "NC",
                         "UMSDR", "UPE"})
# The flags that say the destination could not be reached at all: evidence it is down.
DOWN_FLAGS = frozenset({"UH", "UF"})
DOWN_SHARE = 0.8  # share of a destination's calls failing with DOWN_FLAGS that means "down"
MIN_DOWN_CALLS = 3.0
QUANTILES = ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms"))
MAX_ERROR_CHARS = 300
MAX_ANSWER_BYTES = 32 * 1024 * 1024
_VERSION_SUFFIX = re.compile(r"-v\d+[a-z0-9]*$")

_ISTIO_SIDES = ("workload", "app", "canonical_service")
_ISTIO_BY = ",".join(["reporter", *(f"source_{s}" for s in _ISTIO_SIDES),
                      *(f"destination_{s}" for s in _ISTIO_SIDES), "destination_service_name"])


def istio_queries(window_s: float) -> tuple[str, str]:
    w = f"{max(1, round(window_s))}s"
    return (f"sum by ({_ISTIO_BY},response_code,response_flags) "
            f"(increase(istio_requests_total[{w}]))",
            f"sum by ({_ISTIO_BY},le) (increase(istio_request_duration_milliseconds_bucket[{w}]))")


def linkerd_queries(window_s: float) -> tuple[str, str]:
    w = f"{max(1, round(window_s))}s"
    return ("sum by (deployment,dst_deployment,classification,status_code) "
            f"(increase(response_total{{direction=\"outbound\"}}[{w}]))",
            "sum by (deployment,dst_deployment,le) "
            f"(increase(response_latency_ms_bucket{{direction=\"outbound\"}}[{w}]))")


def strip_version(deployment: str) -> str:
    """``payment-v2`` -> ``payment``: a Linkerd deployment's app name."""
    return _VERSION_SUFFIX.sub("", deployment) or deployment


def _ok(v: str | None) -> bool:
    return bool(v) and v != UNKNOWN


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` (upper bound -> count), interpolated
    linearly inside its bucket as Prometheus' ``histogram_quantile`` does; None when empty."""
    if not buckets or math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, bound in enumerate(bounds):
        count = max(buckets[bound], prev_count)  # counts are cumulative; noise can break that
        if count >= rank:
            if bound == math.inf:
                return bounds[i - 1] if i > 0 else None
            if i == 0 and bound <= 0:
                return bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return bounds[-2] if len(bounds) > 1 else None


@dataclass
class MeshEdge:
    source: str
    target: str
    mesh: str
    reporter: str | None  # Istio: the view used ("source" / "destination"); Linkerd: None
    source_workload: str
    target_workload: str
    calls: float = 0.0
    errors: float = 0.0
    down_calls: float = 0.0  # failed with DOWN_FLAGS (never reached the server)
    flags: dict[str, float] = field(default_factory=dict)
    codes: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)

    def figures(self, window_s: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mesh": self.mesh, "reporter": self.reporter,
            "source_workload": self.source_workload, "target_workload": self.target_workload,
            "rate_rps": round(self.calls / window_s, 4),
            "error_ratio": round(self.errors / self.calls, 4) if self.calls else 0.0,
            "calls": round(self.calls), "errors": round(self.errors),
            "no_upstream": round(self.down_calls),
            "response_flags": {k: round(v) for k, v in sorted(self.flags.items()) if round(v)},
        }
        for q, key in QUANTILES:
            v = histogram_quantile(q, self.buckets)
            out[key] = round(v, 2) if v is not None else None
        return out


@dataclass
class MeshNode:
    name: str
    mesh: str
    workloads: set[str] = field(default_factory=set)
    apps: set[str] = field(default_factory=set)


@dataclass
class MeshView:
    """One poll's result: immutable once published."""

    at: float
    window_s: float
    meshes: list[str]
    nodes: dict[str, MeshNode]
    edges: dict[tuple[str, str], MeshEdge]
    dropped_nodes: int = 0
    dropped_edges: int = 0
    skipped_series: int = 0

    def node_figures(self, name: str) -> dict[str, Any]:
        """Calls into ``name`` summed over its mesh edges, with the merged histograms'
        quantiles."""
        calls = errors = down = 0.0
        flags: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for e in self.edges.values():
            if e.target != name:
                continue
            calls += e.calls
            errors += e.errors
            down += e.down_calls
            for f, n in e.flags.items():
                flags[f] = flags.get(f, 0.0) + n
            for le, n in e.buckets.items():
                buckets[le] = buckets.get(le, 0.0) + n
        node = self.nodes[name]
        out: dict[str, Any] = {
            "mesh": node.mesh, "workloads": sorted(node.workloads), "apps": sorted(node.apps),
            "rate_rps": round(calls / self.window_s, 4),
            "error_ratio": round(errors / calls, 4) if calls else 0.0,
            "calls": round(calls), "errors": round(errors), "no_upstream": round(down),
            "response_flags": {k: round(v) for k, v in sorted(flags.items()) if round(v)},
        }
        for q, key in QUANTILES:
            v = histogram_quantile(q, buckets)
            out[key] = round(v, 2) if v is not None else None
        return out


class PromError(Exception):
    pass


async def instant_query(client: httpx.AsyncClient, base: str, query: str,
                        ) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of an instant vector query; raises PromError."""
    try:
        r = await client.get(f"{base.rstrip('/')}/api/v1/query", params={"query": query})
    except httpx.HTTPError as exc:
        raise PromError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                        ) from None
    if len(r.content) > MAX_ANSWER_BYTES:
        raise PromError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    try:
        body = r.json()
    except ValueError:
        raise PromError(f"HTTP {r.status_code}: not JSON") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        msg = body.get("error") if isinstance(body, dict) else None
        raise PromError(f"HTTP {r.status_code}: {msg or 'query failed'}")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" \
            or not isinstance(data.get("result"), list):
        raise PromError("the answer is not an instant vector")
    out = []
    for item in data["result"]:
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise PromError("a malformed sample in the answer") from None
        if math.isfinite(value):
            out.append((labels, value))
    return out


def _le(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class _Builder:
    """Accumulates one poll's series into nodes and edges."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.nodes: dict[str, MeshNode] = {}
        self.edges: dict[tuple[str, str], MeshEdge] = {}
        self.skipped = 0
        self.meshes: list[str] = []

    def node(self, name: str, mesh: str, workload: str | None, app: str | None) -> None:
        n = self.nodes.get(name)
        if n is None:
            n = self.nodes[name] = MeshNode(name, mesh)
        if _ok(workload):
            n.workloads.add(str(workload))
        if _ok(app):
            n.apps.add(str(app))

    # -- Istio -------------------------------------------------------------------------------

    @staticmethod
    def _istio_end(labels: dict[str, str], side: str) -> tuple[str, str, str | None]:
        """(node name, workload, app label) of one end of an Istio series."""
        workload = labels.get(f"{side}_workload", UNKNOWN)
        app = labels.get(f"{side}_app")
        canonical = labels.get(f"{side}_canonical_service")
        service = labels.get("destination_service_name") if side == "destination" else None
        for name in (app, canonical, workload, service):
            if _ok(name):
                return str(name), workload, app if _ok(app) else None
        return UNKNOWN, workload, None

    def istio(self, counts: list[tuple[dict[str, str], float]],
              buckets: list[tuple[dict[str, str], float]]) -> None:
        # Per edge and reporter: the series. Then one reporter per edge, as Kiali reads them.
        views: dict[tuple[str, str], dict[str, MeshEdge]] = {}

        def edge_of(labels: dict[str, str]) -> MeshEdge | None:
            reporter = labels.get("reporter", "")
            if reporter not in ("source", "destination"):
                self.skipped += 1  # e.g. "waypoint" (ambient): not a sidecar view
                return None
            src, src_wl, src_app = self._istio_end(labels, "source")
            dst, dst_wl, dst_app = self._istio_end(labels, "destination")
            if dst == UNKNOWN:
                self.skipped += 1
                return None
            by = views.setdefault((src, dst), {})
            e = by.get(reporter)
            if e is None:
                e = by[reporter] = MeshEdge(src, dst, ISTIO, reporter, src_wl, dst_wl)
                self.node(src, ISTIO, src_wl, src_app)
                self.node(dst, ISTIO, dst_wl, dst_app)
            return e

        for labels, value in counts:
            e = edge_of(labels)
            if e is None:
                continue
            e.calls += value
            code = labels.get("response_code", "")
            flags = {f for f in labels.get("response_flags", "-").split(",") if f and f != "-"}
            for f in flags:
                e.flags[f] = e.flags.get(f, 0.0) + value
            if code:
                e.codes[code] = e.codes.get(code, 0.0) + value
            if code.startswith("5") or flags & ERROR_FLAGS:
                e.errors += value
            if flags & DOWN_FLAGS:
                e.down_calls += value
        for labels, value in buckets:
            le = _le(labels.get("le"))
            e = edge_of(labels) if le is not None else None
            if e is None or le is None:
                continue
            e.buckets[le] = e.buckets.get(le, 0.0) + value
        for (src, dst), by in views.items():
            preferred = "source" if src != UNKNOWN else "destination"
            other = "destination" if preferred == "source" else "source"
            chosen = by.get(preferred)
            if chosen is None or chosen.calls <= 0:
                chosen = by.get(other) if by.get(other) is not None else chosen
            if chosen is not None and chosen.calls > 0:
                self.edges[(src, dst)] = chosen

    # -- Linkerd -----------------------------------------------------------------------------

    def linkerd(self, counts: list[tuple[dict[str, str], float]],
                buckets: list[tuple[dict[str, str], float]]) -> None:
        def edge_of(labels: dict[str, str]) -> MeshEdge | None:
            src_wl, dst_wl = labels.get("deployment", ""), labels.get("dst_deployment", "")
            if not src_wl or not dst_wl:
                self.skipped += 1  # an unmeshed destination, or no deployment label
                return None
            src, dst = strip_version(src_wl), strip_version(dst_wl)
            e = self.edges.get((src, dst))
            if e is None:
                e = self.edges[(src, dst)] = MeshEdge(src, dst, LINKERD, None, src_wl, dst_wl)
                self.node(src, LINKERD, src_wl, src)
                self.node(dst, LINKERD, dst_wl, dst)
            return e

        for labels, value in counts:
            e = edge_of(labels)
            if e is None:
                continue
            e.calls += value
            code = labels.get("status_code", "")
            if code:
                e.codes[code] = e.codes.get(code, 0.0) + value
            if labels.get("classification") == "failure":
                e.errors += value
        for labels, value in buckets:
            le = _le(labels.get("le"))
            e = edge_of(labels) if le is not None else None
            if e is None or le is None:
                continue
            e.buckets[le] = e.buckets.get(le, 0.0) + value
        for key in [k for k, e in self.edges.items() if e.mesh == LINKERD and e.calls <= 0]:
            del self.edges[key]

    def view(self, at: float, max_nodes: int, max_edges: int) -> MeshView:
        edges = sorted(self.edges.values(), key=lambda e: (-e.calls, e.source, e.target))
        kept_edges = edges[:max_edges]
        used: dict[str, float] = {}
        for e in kept_edges:
            used[e.source] = used.get(e.source, 0.0) + e.calls
            used[e.target] = used.get(e.target, 0.0) + e.calls
        names = sorted(used, key=lambda n: (-used[n], n))[:max_nodes]
        keep = set(names)
        final = {(e.source, e.target): e for e in kept_edges
                 if e.source in keep and e.target in keep}
        return MeshView(at, self.window_s, self.meshes,
                        {n: self.nodes[n] for n in names}, final,
                        dropped_nodes=len(used) - len(names),
                        dropped_edges=len(edges) - len(final), skipped_series=self.skipped)


def mesh_queries(window_s: float) -> tuple[str, str, str, str]:
    """Istio's counts and buckets, then Linkerd's: the four queries of one poll."""
    return (*istio_queries(window_s), *linkerd_queries(window_s))


Answer = list[tuple[dict[str, str], float]]


def build_view(answers: tuple[Answer, Answer, Answer, Answer], window_s: float, at: float,
               max_nodes: int, max_edges: int) -> MeshView:
    """The mesh view from the answers to ``mesh_queries`` (whichever mesh has series)."""
    istio_counts, istio_buckets, l_counts, l_buckets = answers
    builder = _Builder(window_s)
    if istio_counts:
        builder.meshes.append(ISTIO)
        builder.istio(istio_counts, istio_buckets)
    if l_counts:
        builder.meshes.append(LINKERD)
        builder.linkerd(l_counts, l_buckets)
    return builder.view(at, max_nodes, max_edges)


class MeshSource:
    """Polls one Prometheus; ``view`` is the latest good mesh view (or None)."""

    def __init__(self, config: MeshConfig, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if config.prometheus is None:
            raise ValueError("MeshSource needs MeshConfig.prometheus")
        self.url: str = config.prometheus
        self.config = config
        self.clock = clock
        self._transport = transport
        self.view: MeshView | None = None
        self.polls = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success: float | None = None

    async def poll_once(self, client: httpx.AsyncClient | None = None) -> MeshView | None:
        """One poll; publishes and returns the new view, or counts the failure (None)."""
        if client is None:
            async with httpx.AsyncClient(timeout=self.config.timeout_s, trust_env=False,
                                         transport=self._transport) as own:
                return await self.poll_once(own)
        self.polls += 1
        try:
            ic, ib, lc, lb = await asyncio.gather(
                *(instant_query(client, self.url, q)
                  for q in mesh_queries(self.config.window_s)))
        except PromError as exc:
            self.failures += 1
            self.last_error = f"{self.url}: {exc}"[:MAX_ERROR_CHARS]
            self.last_error_at = self.clock()
            return None
        now = self.clock()
        view = build_view((ic, ib, lc, lb), self.config.window_s, now, self.config.max_nodes,
                          self.config.max_edges)
        self.view = view
        self.last_success = now
        self.last_error = None
        return view

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.config.timeout_s, trust_env=False,
                                     transport=self._transport) as client:
            while True:
                try:
                    await self.poll_once(client)
                except Exception as exc:  # noqa: BLE001 - a bad answer must not end polling
                    self.failures += 1
                    self.last_error = (f"{self.url}: unexpected answer: "
                                       f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
                    self.last_error_at = self.clock()
                await asyncio.sleep(self.config.poll_s)

    def current(self, now: float) -> MeshView | None:
        """The view to show at ``now``: the last good one, unless older than twice the
        window (Prometheus has been unreachable that long)."""
        v = self.view
        if v is None or now - v.at > 2 * self.config.window_s:
            return None
        return v

    def status(self) -> dict[str, Any]:
        v = self.view
        return {
            "prometheus": self.url, "meshes": list(v.meshes) if v else [],
            "polls": self.polls, "failures": self.failures,
            "last_success": self.last_success, "last_error": self.last_error,
            "nodes": len(v.nodes) if v else 0, "edges": len(v.edges) if v else 0,
            "dropped_nodes": v.dropped_nodes if v else 0,
            "dropped_edges": v.dropped_edges if v else 0,
        }

    def problem(self) -> dict[str, Any] | None:
        """For ``/healthz``: why the mesh source is degraded, or None."""
        if self.last_error is None:
            return None
        return {"prometheus": self.url, "error": self.last_error, "since": self.last_error_at,
                "failures": self.failures,
                "message": "the mesh Prometheus cannot be queried: mesh-only calls and "
                           "services are missing from the graph (traces still arrive)"}


class MeshAppender:
    """Joins the latest mesh view with the snapshot's trace graph (see the module doc)."""

    name = "mesh"

    def __init__(self, source: MeshSource,
                 traced: Callable[[], set[str]] | None = None) -> None:
        self.source = source
        self.traced = traced

    def append(self, snap: Snapshot) -> None:
        src = self.source
        info: dict[str, Any] = src.status()
        snap.meta["mesh"] = info
        if snap.historical:
            # Only the latest poll is kept: a past graph is the traces' alone.
            info["note"] = "the mesh's figures are live only: not shown at a past time"
            return
        view = src.current(snap.generated_at)
        if view is None:
            return
        join(snap, view, self.traced() if self.traced is not None else set(), info)


def join(snap: Snapshot, view: MeshView, traced: set[str], info: dict[str, Any]) -> None:
    """Add ``view`` to ``snap`` (see the module doc); ``traced``: the services that send
    spans; ``info`` gets the mesh-only edges and untraced services."""
    for name in view.nodes:
        fig = view.node_figures(name)
        node = snap.nodes.get(name)
        if node is None:
            node = snap.nodes[name] = Node(
                id=name, kind="virtual" if name == UNKNOWN else "service",
                rate_rps=fig["rate_rps"], error_ratio=fig["error_ratio"],
                p50_ms=fig["p50_ms"], p95_ms=fig["p95_ms"], p99_ms=fig["p99_ms"],
                meta={"up": None, "scrape_timed_out": False, "scrape_refused": False,
                      "calls": fig["calls"], "errors": fig["errors"], "versions": []})
        else:
            for q in ("p50_ms", "p95_ms", "p99_ms"):
                if getattr(node, q) is None and fig[q] is not None:
                    setattr(node, q, fig[q])
            if not node.meta.get("calls") and fig["calls"]:
                # Traces saw none of its calls (it only appears as a peer, or idle).
                node.rate_rps, node.error_ratio = fig["rate_rps"], fig["error_ratio"]
                node.meta["calls"], node.meta["errors"] = fig["calls"], fig["errors"]
        node.meta["mesh"] = fig
        has_traces = name in traced
        node.meta["traced"] = has_traces
        node.meta["no_traces"] = not has_traces and name != UNKNOWN
        calls = fig["calls"]
        if fig["no_upstream"] >= max(MIN_DOWN_CALLS, DOWN_SHARE * calls) and calls:
            node.meta["mesh_down"] = True
            if node.meta.get("up") is None:
                node.meta["up"] = False
                node.meta["up_source"] = "mesh"
    for key, me in view.edges.items():
        fig = me.figures(view.window_s)
        edge = snap.edges.get(key)
        if edge is None:
            snap.edges[key] = Edge(
                source=me.source, target=me.target, rate_rps=fig["rate_rps"],
                error_ratio=fig["error_ratio"], p50_ms=fig["p50_ms"],
                p95_ms=fig["p95_ms"], p99_ms=fig["p99_ms"],
                meta={"calls": fig["calls"], "errors": fig["errors"],
                      "client_errors": fig["errors"],
                      "server_errors": max(0, fig["errors"] - fig["no_upstream"]),
                      "client_only_errors": fig["no_upstream"],
                      "traced": False, "mesh": fig})
        else:
            edge.meta["mesh"] = fig
            edge.meta["traced"] = True
    info["mesh_only_edges"] = sorted(f"{s} -> {t}" for (s, t), e in snap.edges.items()
                                     if e.meta.get("traced") is False)
    info["untraced_services"] = sorted(n.id for n in snap.nodes.values()
                                       if n.meta.get("no_traces"))


class MeshCollector(Collector):
    """The mesh source's polls, failures and view size on ``/metrics``."""

    def __init__(self, source: MeshSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        s, v = self.source, self.source.view
        yield CounterMetricFamily("conway_mesh_polls", "Queries of the mesh Prometheus",
                                  value=s.polls)
        yield CounterMetricFamily("conway_mesh_poll_failures",
                                  "Failed queries of the mesh Prometheus", value=s.failures)
        yield GaugeMetricFamily("conway_mesh_nodes", "Workloads in the last mesh view",
                                value=len(v.nodes) if v else 0)
        yield GaugeMetricFamily("conway_mesh_edges", "Calls (edges) in the last mesh view",
                                value=len(v.edges) if v else 0)
        yield GaugeMetricFamily("conway_mesh_dropped_nodes",
                                "Workloads the last mesh view left out (over the cap)",
                                value=v.dropped_nodes if v else 0)
        yield GaugeMetricFamily("conway_mesh_dropped_edges",
                                "Edges the last mesh view left out (over the cap)",
                                value=v.dropped_edges if v else 0)
        yield GaugeMetricFamily("conway_mesh_skipped_series",
                                "Series of the last poll that named no usable workload",
                                value=v.skipped_series if v else 0)


def install(service: CollectorService, config: CollectorConfig) -> MeshSource | None:
    """With ``config.mesh.prometheus``: the poller (a background task), its appender (after
    the traffic graph's, before ownership and diagnosis), parts["mesh"] and its /metrics
    collector."""
    if config.mesh.prometheus is None:
        return None
    source = MeshSource(config.mesh, clock=service.clock)

    def traced() -> set[str]:
        graph = service.parts.get("graph")
        if graph is None:
            return set()
        return {name for name, kind in graph.kinds.items() if kind == "service"}

    service.parts["mesh"] = source
    service.appenders.append(MeshAppender(source, traced))
    service.metrics.register(MeshCollector(source))
    service.run_in_background(source.run)
    return source
