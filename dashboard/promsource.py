"""The dashboard's Prometheus source: the graph from the ``traces_service_graph_*`` series.

Past one collector, several collectors (each fed whole traces by the OpenTelemetry Collector's
``loadbalancing`` exporter) are scraped by Prometheus, and the dashboard reads Prometheus with
the queries Grafana's service graph uses, summed ``by (client, server)`` so every collector's
share is merged:

- calls and errors in the window: every ``traces_service_graph_request_total`` and
  ``..._failed_total`` series (one per collector and edge) now, minus its value W seconds ago
  (a series born inside the window counts from zero, a counter reset from the reset), summed
  by client and server; rate is calls / W. This is exact where Grafana's
  ``sum by (client, server) (rate(traces_service_graph_request_total[W]))`` extrapolates and
  drops a new series' first value, so it agrees with the collectors' own counts;
- time series on a service page: that ``rate()`` query (and the failed one) over time;
- latency: ``histogram_quantile(q, sum by (client, server, le)
  (rate(traces_service_graph_request_server_seconds_bucket[W])))`` for edges and ``by
  (server, le)`` for nodes (as Grafana, a node's numbers are the calls it served);
- ``up{service=...}`` where Prometheus scrapes the services' own ``/metrics``;
- with ``mesh_url`` (``--mesh-prometheus``): the Istio / Linkerd sidecar series, read and
  joined as the collector's mesh source does (``collector.mesh``): calls only the mesh sees,
  services marked "no traces", the mesh's figures beside the traces'.

Ownership comes from the Backstage catalog, read in-process by ``collector.ownership`` (the
same code the collector runs), so teams, orphans, the team map and drift work as with a
collector. What the series cannot carry is said, never invented: no incidents and no root
cause (those need the traces themselves; with ``--alertmanager`` the incidents the collectors
page for are read back from Alertmanager, see ``incidents_from_alerts``), no per-node self
time, no versions; health is the
error-ratio thresholds of ``collector.diagnosis.health`` (plus ``down`` from a failed scrape),
without the collector's latency baselines or hysteresis.

Time travel (``graph(window, at=T)``): every query is evaluated at T (PromQL's ``time=``), so
the graph and its threshold health are as Prometheus saw them then; there are no past
incidents (Alertmanager knows only the alerts active now), and ``history`` offers the last
``HISTORY_S``.

``PrometheusSource`` has the methods the dashboard calls on ``CollectorClient`` and raises the
same ``ApiError``, so the pages work unchanged.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from collector.apijson import graph_json, node_json, peer_json, rounded
from collector.diagnosis.health import HealthInputs, HealthThresholds, classify
from collector.mesh import build_view, join, mesh_queries
from collector.model import ConnectionType, Edge, Node, Snapshot
from collector.ownership.part import Ownership
from collector.vocabulary import DOWN, USER_NODE
from dashboard.client import DEFAULT_TIMEOUT_S, ApiError, _JsonClient

TOTAL = "traces_service_graph_request_total"
FAILED = "traces_service_graph_request_failed_total"
SERVER_BUCKETS = "traces_service_graph_request_server_seconds_bucket"
QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))
# Edges beyond this many (fewest calls first) are left out of a graph, and the graph says so.
MAX_EDGES = 20_000
# Points of a service page's time series.
SERIES_POINTS = 60
SOURCE_NAME = "prometheus"
# The range the time control offers (each PromQL query is evaluated at the moment shown).
HISTORY_S = 3600.0
PAST_INCIDENTS = ("incidents at a past time: Alertmanager knows only the alerts active now; "
                  "open a collector's own dashboard for its incidents then")
NOT_AVAILABLE = "not available from the Prometheus source"
UNAVAILABLE = {
    "incidents": "incidents and root cause need the traces themselves (which span failed "
                 "first); the service-graph series only count calls",
    "self_time": "per-node self time needs the spans; the series carry edge latency only",
    "versions": "service.version is a span attribute; the service-graph series do not carry it",
}

Sample = tuple[dict[str, str], float]


class CatalogOwnership:
    """The catalog, loaded once and read again when its files change (checked per use)."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.ownership = Ownership(path, clock)
        # Raises CatalogInvalid: at start there is no good catalog to keep in force.
        self.ownership.store.load_initial()
        self._lock = threading.Lock()

    def current(self) -> Ownership:
        with self._lock:
            if self.ownership.store.changed():
                self.ownership.reload()
        return self.ownership


@dataclass(slots=True)
class _EdgeCounts:
    calls: float = 0.0
    errors: float = 0.0
    by_type: dict[str, float] = field(default_factory=dict)  # calls by connection_type


class PrometheusSource(_JsonClient):
    """Answers the dashboard's collector calls from Prometheus' HTTP API."""

    def __init__(
        self,
        base_url: str,
        ownership: CatalogOwnership,
        *,
        scrape_interval_s: float = 15.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        thresholds: HealthThresholds | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        alertmanager_url: str | None = None,
        mesh_url: str | None = None,
    ) -> None:
        super().__init__(base_url, what="Prometheus", timeout_s=timeout_s, transport=transport)
        # The Prometheus holding the Istio / Linkerd sidecar series (collector.mesh), often
        # this same one: the calls only the mesh sees join the graph.
        self.mesh = (_JsonClient(mesh_url, what="mesh Prometheus", timeout_s=timeout_s,
                                 transport=transport) if mesh_url else None)
        self.alertmanager = (_JsonClient(alertmanager_url, what="Alertmanager",
                                         timeout_s=timeout_s, transport=transport)
                             if alertmanager_url else None)
        self.catalog = ownership
        self.scrape_interval_s = scrape_interval_s
        self.thresholds = thresholds or HealthThresholds()
        self.clock = clock
        self._snap: Snapshot | None = None

    def __enter__(self) -> Self:
        return self

    # ---- Prometheus HTTP API --------------------------------------------------------------

    def query(self, promql: str, at: float) -> list[Sample]:
        """An instant query's vector as (labels, value) pairs; NaN and Inf are dropped."""
        body = self.request("GET", "/api/v1/query", params={"query": promql, "time": f"{at:.3f}"})
        return [(labels, v) for labels, points in _result(body, promql) for _, v in points[-1:]]

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        body = self.request(
            "GET", "/api/v1/query_range",
            params={"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                    "step": f"{step:.3f}"},
        )
        return _result(body, promql)

    # ---- the snapshot ---------------------------------------------------------------------

    def snapshot(self, window_s: float, at: float | None = None) -> Snapshot:
        """The graph over the last ``window_s`` seconds (before ``at``, a past moment, when
        given: every query is evaluated at that time), with ownership and health set."""
        now = self.clock() if at is None else at
        snap = Snapshot(window_s=window_s, generated_at=now, historical=at is not None)
        w = _range(window_s)
        counts = self._counts(now, window_s)
        if len(counts) > MAX_EDGES:
            keep = sorted(counts, key=lambda k: counts[k].calls, reverse=True)[:MAX_EDGES]
            snap.meta["edges_left_out"] = len(counts) - MAX_EDGES
            counts = {k: counts[k] for k in keep}
        edge_q = {
            key: _by_pair(self.query(
                f"histogram_quantile({q}, sum by (client, server, le) "
                f"(rate({SERVER_BUCKETS}[{w}])))", now))
            for key, q in QUANTILES
        }
        node_q = {
            key: {labels.get("server", ""): v for labels, v in self.query(
                f"histogram_quantile({q}, sum by (server, le) (rate({SERVER_BUCKETS}[{w}])))",
                now)}
            for key, q in QUANTILES
        }
        up: dict[str, bool] = {}
        for labels, v in self.query('max by (service) (up{service!=""})', now):
            up[labels["service"]] = v >= 1
        services = _service_names(counts)
        for (client, server), c in counts.items():
            for name in (client, server):
                if name not in snap.nodes:
                    kind = "service" if name in services else "virtual"
                    snap.nodes[name] = Node(id=name, kind=kind, meta={"calls": 0, "errors": 0})
            edge = Edge(
                source=client,
                target=server,
                connection_type=_connection_type(c),
                rate_rps=c.calls / window_s,
                error_ratio=c.errors / c.calls if c.calls else 0.0,
                meta={"calls": int(round(c.calls)), "errors": int(round(c.errors))},
            )
            for key, _ in QUANTILES:
                setattr(edge, key, _ms(edge_q[key].get((client, server))))
            edge.health = self._health(c.calls, edge.error_ratio, edge.p95_ms, None)
            snap.edges[(client, server)] = edge
            target = snap.nodes[server]
            target.rate_rps += edge.rate_rps
            target.meta["calls"] += edge.meta["calls"]
            target.meta["errors"] += edge.meta["errors"]
        if self.mesh is not None:
            self._join_mesh(snap, now, window_s, services)
        for name in up:
            if name not in snap.nodes:
                # Scraped but no traffic in the window: shown, as a collector shows it.
                snap.nodes[name] = Node(id=name, kind="service", meta={"calls": 0, "errors": 0})
        for node in snap.nodes.values():
            calls, errors = node.meta["calls"], node.meta["errors"]
            node.error_ratio = errors / calls if calls else 0.0
            for key, _ in QUANTILES:
                value = _ms(node_q[key].get(node.id))
                if value is not None or "mesh" not in node.meta:  # else the mesh's figure
                    setattr(node, key, value)
            if node.id in up or node.meta.get("up_source") != "mesh":
                node.meta["up"] = up.get(node.id)
            node.health = self._health(calls, node.error_ratio, node.p95_ms, node.meta["up"])
        for edge in snap.edges.values():
            if edge.meta.get("traced") is False:
                edge.health = self._health(edge.meta["calls"], edge.error_ratio, edge.p95_ms,
                                           None)
        self.catalog.current().appender.append(snap)
        self._snap = snap
        return snap

    def _join_mesh(self, snap: Snapshot, now: float, window_s: float,
                   traced: set[str]) -> None:
        """The mesh's calls and workloads joined with the service-graph ones, as the
        collector's mesh source does (``collector.mesh.join``); a mesh Prometheus that cannot
        be read is a note on the graph, not a failed graph."""
        assert self.mesh is not None
        answers = []
        try:
            for promql in mesh_queries(window_s):
                body = self.mesh.request("GET", "/api/v1/query",
                                         params={"query": promql, "time": f"{now:.3f}"})
                answers.append([(labels, v) for labels, points in _result(body, promql)
                                for _, v in points[-1:]])
        except ApiError as exc:
            snap.meta["mesh"] = {"prometheus": self.mesh.base_url, "error": str(exc)}
            return
        view = build_view((answers[0], answers[1], answers[2], answers[3]), window_s, now,
                          MAX_EDGES, MAX_EDGES)
        info: dict[str, Any] = {"prometheus": self.mesh.base_url, "meshes": view.meshes}
        join(snap, view, traced, info)
        snap.meta["mesh"] = info

    def _counts(self, now: float, window_s: float) -> dict[tuple[str, str], _EdgeCounts]:
        """Calls and errors per (client, server) in the window, from every collector."""
        out: dict[tuple[str, str], _EdgeCounts] = {}
        for labels, delta in self._deltas(TOTAL, now, window_s):
            if delta > 0:
                c = out.setdefault((labels.get("client", ""), labels.get("server", "")),
                                   _EdgeCounts())
                c.calls += delta
                ctype = labels.get("connection_type", "")
                c.by_type[ctype] = c.by_type.get(ctype, 0.0) + delta
        for labels, delta in self._deltas(FAILED, now, window_s):
            pair = (labels.get("client", ""), labels.get("server", ""))
            if pair in out:
                out[pair].errors += delta
        return out

    def _deltas(self, metric: str, now: float, window_s: float) -> list[Sample]:
        """Each series of a counter (one per collector and edge): its growth in the window."""
        before = {_series_key(labels): v for labels, v in self.query(metric, now - window_s)}
        out = []
        for labels, v in self.query(metric, now):
            old = before.get(_series_key(labels), 0.0)
            # A counter below its old value was reset (its collector restarted): count from 0.
            out.append((labels, v - old if v >= old else v))
        return out

    def _health(
        self, calls: float, error_ratio: float, p95_ms: float | None, up: bool | None
    ) -> str:
        """The collector's entry thresholds on error ratio (and its no-baseline latency
        bound); ``down`` when Prometheus' scrape of the service failed."""
        if up is False:
            return DOWN
        return classify(HealthInputs(calls, error_ratio, p95_ms, None, up, in_calls=0.0,
                                     in_client_only_errors=0.0, is_service=True),
                        self.thresholds)

    def _snapshot_for(self, window_s: float) -> Snapshot:
        # One refresh asks for the graph, then the teams: one set of queries serves both.
        if self._snap is not None and self._snap.window_s == window_s:
            return self._snap
        return self.snapshot(window_s)

    # ---- what the dashboard calls (CollectorClient's methods) -----------------------------

    def graph(self, window_s: float, at: float | None = None) -> dict[str, Any]:
        snap = self.snapshot(window_s, at)
        notes = [f"{what}: {why}" for what, why in UNAVAILABLE.items()]
        if at is not None:
            out = {**graph_json(snap), "window_s": window_s, "source": SOURCE_NAME,
                   "notes": [*notes, PAST_INCIDENTS], "incidents": [],
                   "health_source": "judged", "history": self.history(window_s)}
            return out
        mesh = snap.meta.get("mesh")
        if isinstance(mesh, dict) and mesh.get("error"):
            notes.append(f"service mesh: {mesh['error']}")
        if snap.meta.get("edges_left_out"):
            notes.append(f"{snap.meta['edges_left_out']} edges with the fewest calls left out "
                         f"(more than {MAX_EDGES})")
        return {**graph_json(snap), "window_s": window_s, "source": SOURCE_NAME, "notes": notes}

    def history(self, window_s: float) -> dict[str, Any] | None:
        """What the time control offers: the last ``HISTORY_S`` (Prometheus keeps its own
        retention; an older ``at`` is asked for all the same)."""
        now = self.clock()
        return {"from": now - HISTORY_S, "to": now, "earliest_at": now - HISTORY_S + window_s,
                "window_s": window_s}

    def incidents(self) -> list[dict[str, Any]]:
        """The open incidents the collectors page for, read back from Alertmanager (every
        replica sends its alerts there, merged by their labels), when ``alertmanager_url`` is
        given; else none: finding where a failure starts needs the traces (see UNAVAILABLE)."""
        if self.alertmanager is None:
            return []
        body = self.alertmanager.request("GET", "/api/v2/alerts",
                                         params={"active": "true", "silenced": "true",
                                                 "inhibited": "true"})
        return incidents_from_alerts(body if isinstance(body, list) else [])

    def paging(self) -> dict[str, Any] | None:
        """Each collector pages on its own; their pagers' state is on their /api/paging."""
        return None

    def incident_list(self) -> list[dict[str, Any]]:
        """The open ones only: Alertmanager forgets resolved alerts (the collectors keep
        them)."""
        return self.incidents()

    def incident(self, incident_id: str) -> dict[str, Any]:
        for inc in self.incidents():
            if inc["id"] == incident_id:
                return inc
        raise ApiError(f"no open incident {incident_id!r} in Alertmanager; resolved incidents, "
                       f"their history and stored graph are kept by the collectors: open a "
                       f"replica's own dashboard", status=404)

    def close(self) -> None:
        super().close()
        if self.alertmanager is not None:
            self.alertmanager.close()
        if self.mesh is not None:
            self.mesh.close()

    def teams(self) -> dict[str, Any]:
        return dict(self.catalog.current().teams_payload(self._snapshot_for(60.0)))

    def team(self, name: str, window_s: float) -> dict[str, Any]:
        snap = self._snapshot_for(window_s)
        ownership = self.catalog.current()
        row = ownership.find_team(snap, name)
        if row is None:
            raise ApiError(f"no team named {name!r} in the catalog", status=404)
        return dict(ownership.team_payload(snap, row))

    def teammap(self, window_s: float) -> dict[str, Any]:
        return dict(self.catalog.current().teammap_payload(self._snapshot_for(window_s)))

    def service(self, name: str, window_s: float) -> dict[str, Any]:
        snap = self._snapshot_for(window_s)
        node = snap.nodes.get(name)
        if node is None:
            raise ApiError(f"Prometheus has no service-graph series for {name!r} in the last "
                           f"{window_s:.0f} s", status=404)

        return {
            **node_json(node),
            "name": name,
            "source": SOURCE_NAME,
            "series": self._series(name, window_s),
            "callers": [peer_json(e, e.source) for (_, t), e in sorted(snap.edges.items())
                        if t == name],
            "callees": [peer_json(e, e.target) for (s, _), e in sorted(snap.edges.items())
                        if s == name],
            "versions": [],
            "owner": self.catalog.current().owner_of(name),
            "unavailable": {k: UNAVAILABLE[k] for k in ("versions", "self_time", "incidents")},
        }

    def _series(self, name: str, window_s: float) -> list[dict[str, Any]]:
        """Rate, error ratio and p95 of the calls ``name`` served, over the window."""
        end = self.clock()
        step = max(1.0, window_s / SERIES_POINTS)
        # Grafana's $__rate_interval: at least four scrapes, so rate() has samples to use.
        w = _range(max(step, 4 * self.scrape_interval_s))
        sel = f'{{server="{_escape(name)}"}}'
        total = _points(self.query_range(
            f"sum(rate({TOTAL}{sel}[{w}]))", end - window_s, end, step))
        failed = _points(self.query_range(
            f"sum(rate({FAILED}{sel}[{w}]))", end - window_s, end, step))
        p95 = _points(self.query_range(
            f"histogram_quantile(0.95, sum by (le) (rate({SERVER_BUCKETS}{sel}[{w}])))",
            end - window_s, end, step))
        out = []
        for t in sorted(total):
            rate = total[t]
            out.append({
                "t": t,
                "rate_rps": rounded(rate),
                "error_ratio": rounded(failed.get(t, 0.0) / rate) if rate > 0 else 0.0,
                "p95_ms": rounded(_ms(p95.get(t)), 3),
            })
        return out


# ---- pure helpers -------------------------------------------------------------------------


def _result(body: Any, promql: str) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """A query answer's series as (labels, [(t, value)]) with finite values only."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ApiError(f"Prometheus answered {promql!r} with no result: {str(body)[:200]}")
    data = body.get("data") or {}
    out: list[tuple[dict[str, str], list[tuple[float, float]]]] = []
    for item in data.get("result", []) or []:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        raw = item.get("values") or ([item["value"]] if "value" in item else [])
        points = []
        for t, v in raw:
            value = float(v)
            if math.isfinite(value):
                points.append((float(t), value))
        if points:
            out.append((labels, points))
    return out


def _by_pair(samples: Iterable[Sample]) -> dict[tuple[str, str], float]:
    return {(lab.get("client", ""), lab.get("server", "")): v for lab, v in samples}


def _series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def _points(series: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> dict[float, float]:
    return {t: v for _, points in series[:1] for t, v in points}


def _range(seconds: float) -> str:
    return f"{max(1, int(math.ceil(seconds)))}s"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or not math.isfinite(seconds) else seconds * 1000.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _connection_type(c: _EdgeCounts) -> str:
    """The edge's kind: direct when any collector saw both halves, else the most common."""
    if not c.by_type or ConnectionType.DIRECT in c.by_type:
        return ConnectionType.DIRECT
    return max(sorted(c.by_type), key=lambda t: c.by_type[t])


def _service_names(counts: dict[tuple[str, str], _EdgeCounts]) -> set[str]:
    """Which nodes are instrumented services; the rest are virtual (databases, peers, user).

    A node that emits spans is a service: the client of a direct or database call, the server
    of a direct call, or the server called by the entry node ``user`` (a root span). What is
    only ever the server of a ``virtual_node`` / ``database`` call, or ``user``, is virtual.
    """
    out: set[str] = set()
    for (client, server), c in counts.items():
        ctype = _connection_type(c)
        if ctype == ConnectionType.DIRECT or ctype == ConnectionType.MESSAGING:
            out.update((client, server))
        elif ctype == ConnectionType.DATABASE:
            out.add(client)
        elif client == USER_NODE:
            out.add(server)
    out.discard(USER_NODE)
    return out


def incidents_from_alerts(alerts: Iterable[Any]) -> list[dict[str, Any]]:
    """Conway's alerts (``collector.paging``) as the open incidents ``/api/incidents`` serves,
    newest first: one per ``ConwayRootCause`` alert, its ``ConwayImpacted`` alerts (same
    ``root_cause``) as the impacted services. What the alerts do not carry (confidence, the
    full evidence, history) is left out, never invented."""
    roots: list[dict[str, Any]] = []
    victims: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        if not isinstance(a, dict):
            continue
        labels, ann = a.get("labels") or {}, a.get("annotations") or {}
        if not isinstance(labels, dict) or not isinstance(ann, dict):
            continue
        if labels.get("alertname") == "ConwayImpacted" and labels.get("root_cause"):
            victims.setdefault(str(labels["root_cause"]), []).append(
                {"service": labels.get("service"), "team": labels.get("team"),
                 "summary": ann.get("description") or ann.get("summary", "")})
        elif labels.get("alertname") == "ConwayRootCause" and labels.get("service"):
            roots.append(a)
    out: list[dict[str, Any]] = []
    for a in roots:
        labels, ann = a["labels"], a.get("annotations") or {}
        service = str(labels["service"])
        description = str(ann.get("description") or "")
        page = {"team": labels.get("team"), "on_call": ann.get("on_call"),
                "channel": ann.get("channel"), "runbook": ann.get("runbook_url")}
        if not labels.get("team") and ann.get("owner"):
            page["fallback"] = ann["owner"]
        out.append({
            "id": str(ann.get("incident") or service), "status": "open",
            "started_at": _parse_time(a.get("startsAt")), "source": "alertmanager",
            "root_cause": {"service": service, "team": labels.get("team"),
                           "kind": ann.get("kind") or labels.get("kind"),
                           "evidence": {"summary": description.split("\n", 1)[0]}},
            "impacted": sorted(victims.get(service, []), key=lambda d: str(d["service"])),
            "page": page, "confidence": None, "version_change": None,
        })
    out.sort(key=lambda i: float(i["started_at"] or 0.0), reverse=True)
    return out


def _parse_time(value: Any) -> float | None:
    """An RFC 3339 time (Alertmanager's, with nanoseconds) as epoch seconds."""
    if not isinstance(value, str):
        return None
    from datetime import datetime

    text = value.replace("Z", "+00:00")
    if "." in text:  # Python takes at most microseconds
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
