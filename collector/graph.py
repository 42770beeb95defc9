"""The traffic graph: decoded spans -> pairing -> rolling statistics, and the traffic appender.

`TrafficGraph` is the `SpanConsumer` that keeps everything traffic knows: per-node statistics
(a service's own SERVER/CONSUMER spans; for a virtual node, the calls into it), per-edge
statistics (calls from pairing), versions seen per service, and the cumulative totals that
``/metrics`` exports. `TrafficAppender` is the first step of the snapshot pipeline: it creates
the nodes and edges of a window with their rate, error ratio, latency and the meta keys the
other appenders read. The numbers of distinct nodes and edges are capped (``max_nodes``,
``max_edges``); what a cap refuses is counted in ``dropped_nodes`` / ``dropped_edges``, and
the appender puts every cap, its use and its drops in ``snap.meta["limits"]`` (served as the
``limits`` object of ``/api/graph``). Memory is therefore bounded by the caps, not by traffic.
`GraphCollector` puts the graph's series and counters on ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.config import MAX_EDGES, MAX_NODES, CollectorConfig
from collector.exposition import EdgeTotals, EdgeTotalState, service_graph_families
from collector.model import Call, ConnectionType, Edge, Node, Snapshot, SpanRecord
from collector.pairing import Pairer, PairingConfig
from collector.service import CollectorService
from collector.stats import (
    Change,
    Point,
    RollingStats,
    Summary,
    VersionLog,
    VersionSeen,
)
from collector.vocabulary import CONSUMER as _CONSUMER
from collector.vocabulary import SERVER as _SERVER

# A span ending more than this after it arrived comes from a host whose clock is ahead.
CLOCK_AHEAD_S = 1.0
# A service's node shows the offset for this long after its last span from the future.
CLOCK_AHEAD_SHOWN_S = 60.0

TICK_S = 0.5  # how often pending halves are expired when no spans arrive
SERVICE = "service"
VIRTUAL = "virtual"



@dataclass(frozen=True)
class EdgeView:
    """One edge's statistics over a window, for routes and other concerns."""

    source: str
    target: str
    connection_type: str
    summary: Summary


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node as `TrafficGraph` exports and restores it."""

    name: str
    kind: str  # SERVICE or VIRTUAL
    seen: float | None  # when one of its spans last arrived; None: never (a virtual node)
    versions: list[VersionSeen]  # oldest first


@dataclass
class GraphChanges:
    """What changed in a `TrafficGraph` since its last export (`TrafficGraph.export_changes`),
    or its whole state (``full``, `TrafficGraph.export_all`: whatever it lacks is gone); also
    what `TrafficGraph.restore` puts back. It holds copies, never the graph's own objects."""

    full: bool = False
    started_at: float | None = None  # when observation began
    nodes: list[NodeState] = field(default_factory=list)
    gone_nodes: list[str] = field(default_factory=list)
    edges: list[tuple[tuple[str, str], str]] = field(default_factory=list)  # (key, conn. type)
    gone_edges: list[tuple[str, str]] = field(default_factory=list)
    totals: list[EdgeTotalState] = field(default_factory=list)
    gone_totals: list[tuple[str, str, str]] = field(default_factory=list)
    node_buckets: list[Change] = field(default_factory=list)
    edge_buckets: list[Change] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # `export_counters`


class TrafficGraph:
    """Everything the graph knows from spans. Not thread-safe: callers hold the service lock."""

    def __init__(
        self,
        bucket_s: float = 1.0,
        retention_s: float = 900.0,
        started_at: float = 0.0,
        pairing: PairingConfig | None = None,
        max_nodes: int = MAX_NODES,
        max_edges: int = MAX_EDGES,
    ) -> None:
        self.pairer = Pairer(pairing or PairingConfig())
        self.nodes = RollingStats(bucket_s, retention_s, started_at)
        self.edges = RollingStats(bucket_s, retention_s, started_at)
        self.versions = VersionLog()
        self.totals = EdgeTotals()
        self.kinds: dict[str, str] = {}  # node -> "service" | "virtual"
        self.seen: dict[str, float] = {}  # service -> last time one of its spans arrived
        self.retention_s = retention_s
        self.connection_types: dict[tuple[str, str], str] = {}
        self.max_nodes = max_nodes
        self.max_edges = max_edges
        self.dropped_nodes = 0
        self.dropped_edges = 0
        self.spans = 0  # spans consumed
        # Spans that ended more than CLOCK_AHEAD_S after they arrived (their host's clock is
        # ahead), and per service the latest such offset: (seconds ahead, when seen).
        self.spans_clock_ahead = 0
        # Head sampling: calls recorded with a weight above 1, the calls they stood for, and
        # per service the share its server spans said they keep: (share, when seen).
        self.sampled_calls = 0
        self.sampled_weight = 0
        self.sampled_share: dict[str, tuple[float, float]] = {}
        # Virtual nodes that are queues (a consumer was delivered from them).
        self.queues: set[str] = set()
        self.clock_ahead: dict[str, tuple[float, float]] = {}
        self.calls = 0  # calls recorded on edges
        # Nodes / edges changed or forgotten since the last export (None: not tracked).
        self._changed_nodes: set[str] | None = None
        self._changed_edges: set[tuple[str, str]] | None = None
        self._gone_nodes: set[str] = set()
        self._gone_edges: set[tuple[str, str]] = set()

    @property
    def started_at(self) -> float:
        """When observation began."""
        return self.nodes.started_at

    def limits(self) -> dict[str, int]:
        """Caps, current use and what they refused: the ``limits`` object of ``/api/graph``."""
        return {
            "max_nodes": self.max_nodes,
            "nodes": len(self.kinds),
            "dropped_nodes": self.dropped_nodes,
            "max_edges": self.max_edges,
            "edges": len(self.connection_types),
            "dropped_edges": self.dropped_edges,
            "max_pending": self.pairer.config.max_items,
            "pending": len(self.pairer),
            "dropped_pending": self.pairer.counters.dropped,
            "max_versions_per_service": self.versions.max_per_service,
            "dropped_versions": self.versions.dropped,
        }

    def limit_usage(self) -> list[tuple[str, int, int]]:
        """(cap name, cap, current use) for ``/metrics``."""
        return [
            ("max_nodes", self.max_nodes, len(self.kinds)),
            ("max_edges", self.max_edges, len(self.connection_types)),
            ("max_pending", self.pairer.config.max_items, len(self.pairer)),
        ]

    # -- ingest ------------------------------------------------------------------------------

    def consume(self, spans: Sequence[SpanRecord], now: float) -> None:
        self.spans += len(spans)
        spans = self.pairer.drop_duplicates(spans)  # a re-sent span counts nowhere twice
        record = self.nodes.record
        last_resource: object = None
        known = False
        ahead_ns = int((now + CLOCK_AHEAD_S) * 1e9)
        weight = self.pairer.sampling.weight
        no_multiplier = self.pairer.sampling.multiplier_key is None
        for span in spans:
            if span.end_ns > ahead_ns:
                self._clock_is_ahead(span, now)
            if span.resource is not last_resource:
                # Spans of one resource arrive together and share its dict: do the per-service
                # work once per resource rather than once per span.
                last_resource = span.resource
                known = self._service_seen(span, now)
            if not known:
                continue
            kind = span.kind
            if kind == _SERVER or kind == _CONSUMER:
                w = 1 if not span.trace_state and no_multiplier else weight(span)
                record(
                    span.service, now, (span.end_ns - span.start_ns) / 1e6, span.error, span.error,
                    False, w,
                )
                if w != 1:
                    self._note_sampled(span.service, w, now)
        calls = self.pairer.feed(spans, now, deduplicated=True)
        calls.extend(self.pairer.expire(now))
        for call in calls:
            self.add_call(call)

    def _note_sampled(self, service: str, weight: int, now: float) -> None:
        # The share of its calls a service's traces keep, as last seen (1 / weight).
        if service in self.kinds:
            self.sampled_share[service] = (1.0 / weight, now)

    def _clock_is_ahead(self, span: SpanRecord, now: float) -> None:
        # A span cannot end after it arrives: its host's clock is ahead. The graph places
        # spans by arrival time anyway; this only counts it and says which service.
        self.spans_clock_ahead += 1
        if span.service in self.kinds:
            self.clock_ahead[span.service] = (span.end_ns / 1e9 - now, now)

    def _service_seen(self, span: SpanRecord, now: float) -> bool:
        name = span.service
        if name not in self.kinds and not self._add_node(name, SERVICE):
            return False
        self.seen[name] = now
        if self._changed_nodes is not None:
            self._changed_nodes.add(name)
        if self.kinds[name] != SERVICE:
            # A name first seen as a virtual peer turned out to be instrumented.
            self.kinds[name] = SERVICE
        version = span.resource.get("service.version")
        if version is not None and version != "":
            self.versions.record(name, str(version), now)
        return True

    def _add_node(self, name: str, kind: str) -> bool:
        if len(self.kinds) >= self.max_nodes:
            self.dropped_nodes += 1
            return False
        self.kinds[name] = kind
        if self._changed_nodes is not None:
            self._changed_nodes.add(name)
            self._gone_nodes.discard(name)
        return True

    def add_call(self, call: Call) -> None:
        """Record one call on its edge (and on its virtual server node)."""
        client, server = call.client, call.server
        key = (client, server)
        if key not in self.connection_types:
            if len(self.connection_types) >= self.max_edges:
                self.dropped_edges += 1
                return
            ends = ((client, call.client_is_virtual), (server, call.server_is_virtual))
            for name, virtual in ends:
                if name not in self.kinds and not self._add_node(
                    name, VIRTUAL if virtual else SERVICE
                ):
                    self.dropped_edges += 1
                    return
            self.connection_types[key] = call.connection_type
            if self._changed_edges is not None:
                self._changed_edges.add(key)
                self._gone_edges.discard(key)
        elif not (call.server_is_virtual or call.client_is_virtual):
            # Both halves seen: this is the edge's real kind, even if an expired client half
            # (say, while the server was down) created the edge as a virtual one.
            if self.connection_types[key] != call.connection_type:
                self.connection_types[key] = call.connection_type
                if self._changed_edges is not None:
                    self._changed_edges.add(key)
        self.calls += 1
        # Edge latency is what the caller waited; the server's view when no client half exists.
        duration = call.client_duration_ns
        if duration < 0:
            duration = call.server_duration_ns
        ms = duration / 1e6 if duration >= 0 else -1.0
        failed = call.client_error or call.server_error
        w = call.weight
        self.edges.record(key, call.time_s, ms, failed, call.server_error, call.client_error, w)
        if call.lag_ns >= 0:
            # queue -> consumer: the queue node's latency is the lag, its calls the deliveries.
            if client not in self.queues:
                self.queues.add(client)
            self.nodes.record(client, call.time_s, call.lag_ns / 1e6, False, False, False, w)
        elif call.server_is_virtual and self.kinds.get(server) == VIRTUAL and not (
                call.connection_type == ConnectionType.MESSAGING and server in self.queues):
            self.nodes.record(server, call.time_s, ms, failed, call.server_error, False, w)
        if w != 1:
            self.sampled_calls += 1
            self.sampled_weight += w
        self.totals.observe(call)

    def tick(self, now: float) -> None:
        """Expire pending halves and forget what left the retention. Called periodically."""
        for call in self.pairer.expire(now):
            self.add_call(call)
        pruned = self.nodes.prune(now) + self.edges.prune(now)
        horizon = now - self.retention_s
        if pruned or any(t < horizon for t in self.seen.values()):
            self._forget_idle(horizon)

    def _forget_idle(self, horizon: float) -> None:
        for key in [k for k in self.connection_types if k not in self.edges]:
            del self.connection_types[key]
            self.totals.forget(*key)
            if self._changed_edges is not None:
                self._changed_edges.discard(key)
                self._gone_edges.add(key)
        used = {n for k in self.connection_types for n in k}
        for name in list(self.kinds):
            if name in self.nodes or name in used or self.seen.get(name, horizon) > horizon:
                continue
            del self.kinds[name]
            self.seen.pop(name, None)
            self.clock_ahead.pop(name, None)
            self.sampled_share.pop(name, None)
            self.queues.discard(name)
            self.versions.forget(name)
            if self._changed_nodes is not None:
                self._changed_nodes.discard(name)
                self._gone_nodes.add(name)

    # -- queries -----------------------------------------------------------------------------

    def node(self, name: str, now: float, window_s: float) -> Summary:
        return self.nodes.summary(name, now, window_s)

    def edge_views(self, now: float, window_s: float) -> list[EdgeView]:
        """Edges with at least one call in the window, sorted by (source, target)."""
        out = []
        for (source, target), ctype in sorted(self.connection_types.items()):
            s = self.edges.summary((source, target), now, window_s)
            if s.calls:
                out.append(EdgeView(source, target, ctype, s))
        return out

    def series(self, name: str, now: float, window_s: float) -> list[Point]:
        return self.nodes.series(name, now, window_s)

    def versions_of(self, name: str) -> list[VersionSeen]:
        return self.versions.versions(name)

    # -- export and restore ------------------------------------------------------------------

    def track_changes(self) -> None:
        """Remember what changes from now on, for `export_changes`."""
        if self._changed_nodes is None or self._changed_edges is None:
            self._changed_nodes = set()
            self._changed_edges = set()
        self.totals.track_changes()
        self.nodes.track_changes()
        self.edges.track_changes()

    def export_changes(self) -> GraphChanges:
        """What changed since the last export (copies), then forget it. Before `track_changes`
        or `export_all` the changes are unknown: the whole state, as `export_all` gives it."""
        changed_nodes, changed_edges = self._changed_nodes, self._changed_edges
        if changed_nodes is None or changed_edges is None:
            return self.export_all()
        kinds, types = self.kinds, self.connection_types
        totals, gone_totals = self.totals.export_changes()
        out = GraphChanges(
            full=False,
            started_at=self.started_at,
            nodes=[self._node_state(n) for n in changed_nodes if n in kinds],
            gone_nodes=[n for n in self._gone_nodes if n not in kinds],
            edges=[(k, types[k]) for k in changed_edges if k in types],
            gone_edges=[k for k in self._gone_edges if k not in types],
            totals=totals,
            gone_totals=gone_totals,
            node_buckets=self.nodes.export_changes(),
            edge_buckets=self.edges.export_changes(),
            counters=self.export_counters(),
        )
        self._forget_changes()
        return out

    def export_all(self) -> GraphChanges:
        """The whole state (copies, ``full``); changes are tracked from now on."""
        self._forget_changes()
        return GraphChanges(
            full=True,
            started_at=self.started_at,
            nodes=[self._node_state(n) for n in self.kinds],
            edges=list(self.connection_types.items()),
            totals=self.totals.export_all(),
            node_buckets=self.nodes.export_all(),
            edge_buckets=self.edges.export_all(),
            counters=self.export_counters(),
        )

    def _forget_changes(self) -> None:
        self._changed_nodes = set()
        self._changed_edges = set()
        self._gone_nodes = set()
        self._gone_edges = set()

    def _node_state(self, name: str) -> NodeState:
        return NodeState(name, self.kinds[name], self.seen.get(name),
                         [VersionSeen(v.version, v.first_seen, v.last_seen)
                          for v in self.versions.versions(name)])

    def export_counters(self) -> dict[str, dict[str, int]]:
        """The counters of pairing (``pairing``) and of the graph and its parts (``graph``)."""
        return {
            "pairing": self.pairer.counters.export(),
            "graph": {
                "spans": self.spans,
                "calls": self.calls,
                "spans_clock_ahead": self.spans_clock_ahead,
                "sampled_calls": self.sampled_calls,
                "sampled_weight": self.sampled_weight,
                "dropped_nodes": self.dropped_nodes,
                "dropped_edges": self.dropped_edges,
                "dropped_versions": self.versions.export_counters()["dropped"],
                "nodes_late_dropped": self.nodes.export_counters()["late_dropped"],
                "edges_late_dropped": self.edges.export_counters()["late_dropped"],
            },
        }

    def restore_counters(self, counters: Mapping[str, Mapping[str, int]]) -> None:
        """Set the counters from `export_counters`' output (missing ones to 0)."""
        self.pairer.counters.restore(counters.get("pairing") or {})
        gc = counters.get("graph") or {}
        self.spans = int(gc.get("spans", 0))
        self.calls = int(gc.get("calls", 0))
        self.spans_clock_ahead = int(gc.get("spans_clock_ahead", 0))
        self.sampled_calls = int(gc.get("sampled_calls", 0))
        self.sampled_weight = int(gc.get("sampled_weight", 0))
        self.dropped_nodes = int(gc.get("dropped_nodes", 0))
        self.dropped_edges = int(gc.get("dropped_edges", 0))
        self.versions.restore_counters({"dropped": gc.get("dropped_versions", 0)})
        self.nodes.restore_counters({"late_dropped": gc.get("nodes_late_dropped", 0)})
        self.edges.restore_counters({"late_dropped": gc.get("edges_late_dropped", 0)})

    def restore(self, state: GraphChanges, now: float) -> int:
        """Put exported state back into this (empty) graph, buckets older than the retention
        at ``now`` left out; returns how many nodes, edges, totals and buckets were put back.
        An earlier ``started_at`` replaces the graph's. Not reported as changes."""
        if state.started_at is not None and state.started_at < self.started_at:
            self.nodes.started_at = self.edges.started_at = state.started_at
        n = 0
        for node in state.nodes:
            self.kinds[node.name] = node.kind
            if node.seen is not None:
                self.seen[node.name] = node.seen
            if node.versions:
                self.versions.restore(node.name, [VersionSeen(v.version, v.first_seen,
                                                              v.last_seen) for v in node.versions])
            n += 1
        for key, connection_type in state.edges:
            self.connection_types[key] = connection_type
            n += 1
        n += self.totals.restore(state.totals)
        n += self.restore_buckets(state.node_buckets, state.edge_buckets, now)
        self.restore_counters(state.counters)
        return n

    def restore_buckets(self, node_buckets: Iterable[Change], edge_buckets: Iterable[Change],
                        now: float) -> int:
        """Put back statistics buckets (read lazily: a large state need not be held twice);
        returns how many were within the retention at ``now``."""
        return self.nodes.restore(node_buckets, now) + self.edges.restore(edge_buckets, now)


class TrafficAppender:
    """Creates the snapshot's nodes and edges from the traffic graph and the scraper's ``up``.

    Nodes: every service or virtual node known within the retention (rate 0 when idle in the
    window), plus services known only from scraping. Edges: those with calls in the window.
    """

    name = "traffic"

    def __init__(
        self, graph: TrafficGraph, up_of: Callable[[], dict[str, bool | None]] | None = None,
        timed_out_of: Callable[[], set[str]] | None = None,
        refused_of: Callable[[], set[str]] | None = None,
        served_rps_of: Callable[[str, float, float], float | None] | None = None,
    ) -> None:
        self.graph = graph
        self.up_of = up_of
        self.timed_out_of = timed_out_of
        self.refused_of = refused_of
        # The request rate a service's own /metrics counted (scraped), beside the traced one.
        self.served_rps_of = served_rps_of

    def append(self, snap: Snapshot) -> None:
        g = self.graph
        now, window = snap.generated_at, snap.window_s
        past = snap.historical
        # The scrape's up is live only: a past graph's nodes say null (health at that time
        # comes from the diagnosis' log).
        up = self.up_of() if self.up_of is not None and not past else {}
        timed_out = self.timed_out_of() if self.timed_out_of is not None and not past \
            else set()
        refused = self.refused_of() if self.refused_of is not None and not past else set()
        snap.meta["limits"] = g.limits()
        views = g.edge_views(now, window)
        names = sorted(set(g.kinds) | set(up))
        if past:  # the nodes known then: a bucket at or before that moment, or a call in it
            ends = {n for e in views for n in (e.source, e.target)}
            names = [n for n in names if n in ends or g.nodes.seen_by(n, now)]
        for name in names:
            kind = g.kinds.get(name, SERVICE)
            s = g.node(name, now, window)
            snap.nodes[name] = Node(
                id=name,
                kind=kind,
                rate_rps=s.rate_rps,
                error_ratio=s.error_ratio,
                p50_ms=s.p50_ms,
                p95_ms=s.p95_ms,
                p99_ms=s.p99_ms,
                meta={
                    "up": up.get(name),
                    # The failed scrape timed out (starved or hung, not gone): see scraper.
                    "scrape_timed_out": name in timed_out,
                    # Answered before, refused now: nothing listens there any more.
                    "scrape_refused": name in refused,
                    "calls": s.calls,
                    "errors": s.errors,
                    "versions": [v.version for v in g.versions_of(name)
                                 if not past or v.first_seen <= now],
                },
            )
            ahead = g.clock_ahead.get(name)
            if ahead is not None and now - ahead[1] <= CLOCK_AHEAD_SHOWN_S and not (
                    past and ahead[1] > now):  # in the past: only what was seen by then
                snap.nodes[name].meta["clock_ahead_s"] = round(ahead[0], 1)
            if self.served_rps_of is not None and kind == SERVICE:
                served = self.served_rps_of(name, now - window, now)
                if served is not None:
                    snap.nodes[name].meta["scraped_rps"] = round(served, 3)
            if name in g.queues:
                # Its latency figures are the lag: consumer start - producer end.
                snap.nodes[name].meta["queue"] = True
            share = g.sampled_share.get(name)
            if share is not None and now - share[1] <= window and not (
                    past and share[1] > now):
                # Its traces are head-sampled: counts are estimates from this share of them.
                snap.nodes[name].meta["sampled_share"] = round(share[0], 4)
        for e in views:
            s = e.summary
            snap.edges[(e.source, e.target)] = Edge(
                source=e.source,
                target=e.target,
                connection_type=e.connection_type,
                rate_rps=s.rate_rps,
                error_ratio=s.error_ratio,
                p50_ms=s.p50_ms,
                p95_ms=s.p95_ms,
                p99_ms=s.p99_ms,
                meta={
                    "calls": s.calls,
                    "errors": s.errors,
                    "client_errors": s.client_errors,
                    "server_errors": s.server_errors,
                    "client_only_errors": s.client_only_errors,
                },
            )
        # A virtual node that only calls (``user``, a messaging producer's peer) serves
        # nothing; its rate is that of the calls it makes, not 0.
        sent: dict[str, float] = {}
        for (source, _), edge in snap.edges.items():
            sent[source] = sent.get(source, 0.0) + edge.rate_rps
        for name, node in snap.nodes.items():
            if node.kind != SERVICE and not node.meta["calls"] and sent.get(name):
                node.rate_rps = sent[name]
                node.meta["rate_of"] = "calls made"


class GraphCollector(Collector):
    """The graph on ``/metrics``: Tempo's service-graph series, pairing, the caps and what
    they refused, versions, and calls too old for the retention; read at scrape time."""

    def __init__(self, graph: TrafficGraph) -> None:
        self.graph = graph

    def collect(self) -> Iterator[Metric]:
        g = self.graph
        yield from service_graph_families(g.totals)
        pc = g.pairer.counters
        for name, doc, value in (
            ("conway_pairing_paired", "Calls from a client and a server half that met",
             pc.paired),
            ("conway_pairing_expired", "Halves that expired without their other half",
             pc.expired),
            ("conway_pairing_dropped",
             "Spans dropped from pairing because the pending store was full", pc.dropped),
            ("conway_pairing_unpaired", "Expired halves that produced no call", pc.unpaired),
            ("conway_pairing_virtual", "Expired client halves turned into virtual calls",
             pc.virtual),
            ("conway_pairing_duplicates",
             "Spans seen lately (same trace and span id: a retry, a replayed batch), "
             "dropped before pairing", pc.duplicates),
            ("conway_pairing_roots",
             "Root server/consumer spans turned into calls from user (or from the caller "
             "their peer.service names)", pc.roots),
            ("conway_pairing_database",
             "Database client spans turned into calls at once (no server half awaited)",
             pc.database),
            ("conway_pairing_replaced",
             "Waiting halves dropped because a newer half of the same call and kind came "
             "(a retry or a re-sent span); the newer one waits instead", pc.replaced),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("conway_pairing_pending", "Halves waiting for their other half",
                                value=len(g.pairer))
        yield CounterMetricFamily(
            "conway_graph_dropped_nodes",
            "Spans or calls dropped because the node limit was reached", value=g.dropped_nodes)
        yield CounterMetricFamily(
            "conway_graph_dropped_edges", "Calls dropped because the edge limit was reached",
            value=g.dropped_edges)
        limits = GaugeMetricFamily("conway_limit", "Configured caps (see /api/graph limits)",
                                   labels=["name"])
        usage = GaugeMetricFamily("conway_limit_used", "Current use of each cap",
                                  labels=["name"])
        for name, cap, used in g.limit_usage():
            limits.add_metric([name], cap)
            usage.add_metric([name], used)
        yield limits
        yield usage
        yield CounterMetricFamily("conway_versions_dropped",
                                  "Versions forgotten past the per-service cap",
                                  value=g.versions.dropped)
        yield CounterMetricFamily("conway_stats_late_dropped",
                                  "Calls older than the retention when they arrived",
                                  value=g.nodes.late_dropped + g.edges.late_dropped)
        yield CounterMetricFamily(
            "conway_graph_spans",
            "Spans the traffic graph was given (re-sent ones included: see "
            "conway_pairing_duplicates_total)", value=g.spans)
        yield CounterMetricFamily("conway_graph_calls", "Calls recorded on the graph's edges",
                                  value=g.calls)
        yield CounterMetricFamily(
            "conway_sampled_calls",
            "Calls from head-sampled traces (a tracestate threshold or a span multiplier), "
            "each recorded as the calls it stands for", value=g.sampled_calls)
        yield CounterMetricFamily(
            "conway_sampled_calls_weight",
            "The calls those head-sampled calls stood for (their weights summed)",
            value=g.sampled_weight)
        yield CounterMetricFamily(
            "conway_sampling_unreadable",
            "Tracestate thresholds or span multipliers that could not be read (counted once "
            "each)", value=g.pairer.sampling.unreadable)
        yield CounterMetricFamily(
            "conway_spans_clock_ahead",
            f"Spans that ended more than {CLOCK_AHEAD_S:g} s after they arrived: their host's "
            "clock is ahead (placed by arrival time, durations from their own start and end; "
            "see clock_ahead_s on the service's node)", value=g.spans_clock_ahead)


def install(service: CollectorService, config: CollectorConfig) -> TrafficGraph:
    """Register the graph: consumer, traffic appender, periodic expiry, parts["graph"] and
    its /metrics collector."""
    gc = config.graph
    graph = TrafficGraph(
        bucket_s=config.bucket_s,
        retention_s=config.retention_s,
        started_at=service.clock(),
        pairing=gc.pairing_config(config.memory),
        max_nodes=gc.max_nodes,
        max_edges=gc.max_edges,
    )
    graph.versions.max_per_service = gc.max_versions_per_service
    graph.pairer.sampling.multiplier_key = gc.span_multiplier_key or None
    service.parts["graph"] = graph
    service.consumers.append(graph)
    service.metrics.register(GraphCollector(graph))

    def up_of() -> dict[str, bool | None]:
        scraper = service.parts.get("scraper")
        return scraper.up_by_service() if scraper is not None else {}

    def timed_out_of() -> set[str]:
        scraper = service.parts.get("scraper")
        return scraper.timed_out_services() if scraper is not None else set()

    def refused_of() -> set[str]:
        scraper = service.parts.get("scraper")
        return scraper.refused_services() if scraper is not None else set()

    def served_rps_of(name: str, start: float, end: float) -> float | None:
        scraper = service.parts.get("scraper")
        use = scraper.cpu_use(name, start, end) if scraper is not None else None
        return use.requests if use is not None else None

    service.appenders.append(TrafficAppender(graph, up_of, timed_out_of,
                                             served_rps_of=served_rps_of, refused_of=refused_of))

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            with service.lock:
                graph.tick(service.clock())

    service.run_in_background(ticker)
    return graph
