"""``/metrics``: the service-graph series as Tempo names them, and the receiver's counters.

`EdgeTotals` accumulates, cumulative since start, what Tempo's service-graph processor exports
(``traces_service_graph_request_total``, ``..._failed_total``, and the ``..._server_seconds``
and ``..._client_seconds`` histograms with Tempo's default buckets, labels ``client``,
``server``, ``connection_type``), so Grafana's service graph reads a Conway collector as it
reads Tempo; `service_graph_families` renders them. `IngestCounters` is what the HTTP receiver
counts and `IngestCollector` its ``prometheus_client`` Collector, registered by `install`.

Each concern registers its own Collector in the service's registry
(``CollectorService.metrics``) from its ``install``: the graph's
(`collector.graph.GraphCollector`), the scraper's (`collector.scraper.ScraperCollector`), the
diagnosis' (`collector.diagnosis.DiagnosisCollector`), the pager and the checkpointer (each
its own Collector); the app adds its admission counters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from collector.model import Call

if TYPE_CHECKING:
    from collector.config import CollectorConfig
    from collector.service import CollectorService

# Tempo's default histogram buckets for the service-graph processor, in seconds.
TEMPO_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)
EDGE_LABELS = ["client", "server", "connection_type"]


class _EdgeTotal:
    __slots__ = ("total", "failed", "server", "server_sum", "client", "client_sum")

    def __init__(self, n: int) -> None:
        self.total = 0
        self.failed = 0
        # Per-bucket (not cumulative) counts; index n is the +Inf overflow.
        self.server = [0] * (n + 1)
        self.client = [0] * (n + 1)
        self.server_sum = 0.0
        self.client_sum = 0.0


@dataclass(frozen=True, slots=True)
class EdgeTotalState:
    """One edge's totals, as `EdgeTotals` exports them (copies) and restores them.
    ``server`` / ``client``: per-bucket counts, the last one the +Inf overflow."""

    key: tuple[str, str, str]  # (client, server, connection type)
    total: int
    failed: int
    server: list[int]
    client: list[int]
    server_sum: float
    client_sum: float


@dataclass
class EdgeTotals:
    """Cumulative per-edge counts and latency histograms. A missing half observes 0 s, as Tempo
    and the otelcol connector do, so histogram counts always equal the request total."""

    buckets: Sequence[float] = TEMPO_BUCKETS
    _edges: dict[tuple[str, str, str], _EdgeTotal] = field(default_factory=dict)
    # Keys changed / forgotten since the last export; None until `track_changes`.
    _changed: set[tuple[str, str, str]] | None = field(default=None, init=False, repr=False,
                                                       compare=False)
    _forgotten: set[tuple[str, str, str]] = field(default_factory=set, init=False, repr=False,
                                                  compare=False)

    def observe(self, call: Call) -> None:
        key = (call.client, call.server, call.connection_type)
        e = self._edges.get(key)
        if e is None:
            e = self._edges[key] = _EdgeTotal(len(self.buckets))
        if self._changed is not None:
            self._changed.add(key)
        w = call.weight  # head-sampled: the calls it stands for (Tempo's span multiplier)
        e.total += w
        if call.client_error or call.server_error:
            e.failed += w
        s = call.server_duration_ns / 1e9 if call.server_duration_ns > 0 else 0.0
        c = call.client_duration_ns / 1e9 if call.client_duration_ns > 0 else 0.0
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        e.server[bisect_left(self.buckets, s)] += w
        e.client[bisect_left(self.buckets, c)] += w
        e.server_sum += s * w
        e.client_sum += c * w

    def forget(self, client: str, server: str) -> None:
        for key in [k for k in self._edges if k[0] == client and k[1] == server]:
            del self._edges[key]
            if self._changed is not None:
                self._changed.discard(key)
                self._forgotten.add(key)

    def get(self, key: tuple[str, str, str]) -> _EdgeTotal | None:
        return self._edges.get(key)

    # -- export and restore ----------------------------------------------------------------

    def track_changes(self) -> None:
        """Start remembering changed and forgotten edges for `export_changes`."""
        if self._changed is None:
            self._changed = set()

    def export_changes(self) -> tuple[list[EdgeTotalState], list[tuple[str, str, str]]]:
        """(edges changed, keys forgotten) since the last export, then forget them. Nothing
        before `track_changes`."""
        changed = [self._export(k) for k in self._changed or () if k in self._edges]
        # A key forgotten and then observed again is changed, not gone.
        gone = [k for k in self._forgotten if k not in self._edges]
        if self._changed is not None:
            self._changed = set()
        self._forgotten = set()
        return changed, gone

    def export_all(self) -> list[EdgeTotalState]:
        """Every edge's totals; changes are tracked from now on."""
        self._changed = set()
        self._forgotten = set()
        return [self._export(k) for k in self._edges]

    def _export(self, key: tuple[str, str, str]) -> EdgeTotalState:
        e = self._edges[key]
        return EdgeTotalState(key, e.total, e.failed, list(e.server), list(e.client),
                              e.server_sum, e.client_sum)

    def restore(self, totals: Iterable[EdgeTotalState]) -> int:
        """Put back exported totals (histograms of other buckets start empty); returns how
        many. Not reported as changes."""
        n = 0
        for t in totals:
            e = self._edges[t.key] = _EdgeTotal(len(self.buckets))
            if len(t.server) == len(e.server) and len(t.client) == len(e.client):
                e.server, e.client = list(t.server), list(t.client)
            e.total, e.failed = t.total, t.failed
            e.server_sum, e.client_sum = t.server_sum, t.client_sum
            n += 1
        return n

    def items(self) -> Iterator[tuple[tuple[str, str, str], _EdgeTotal]]:
        return iter(sorted(self._edges.items()))

    def total(self, client: str, server: str) -> int:
        return sum(e.total for k, e in self._edges.items() if k[:2] == (client, server))

    def failed(self, client: str, server: str) -> int:
        return sum(e.failed for k, e in self._edges.items() if k[:2] == (client, server))


@dataclass
class IngestCounters:
    """What the HTTP receiver counts: spans in and refused (by reason), requests by path and
    status, whole requests refused (by reason), and what the span caps trimmed."""

    spans_received: int = 0
    spans_rejected: int = 0
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    spans_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    requests_rejected: dict[str, int] = field(default_factory=dict)
    truncated_values: int = 0
    dropped_attributes: int = 0

    def request(self, path: str, status: int) -> None:
        key = (path, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1

    def reject_request(self, reason: str) -> None:
        self.requests_rejected[reason] = self.requests_rejected.get(reason, 0) + 1

    def reject_spans(self, reasons: dict[str, int]) -> None:
        for reason, n in reasons.items():
            self.spans_rejected_by_reason[reason] = self.spans_rejected_by_reason.get(reason, 0) + n

    def export(self) -> dict[str, object]:
        """The counters as plain JSON-able values, for `restore`."""
        return {
            "spans_received": self.spans_received, "spans_rejected": self.spans_rejected,
            "requests": [[p, st, n] for (p, st), n in self.requests.items()],
            "spans_rejected_by_reason": dict(self.spans_rejected_by_reason),
            "requests_rejected": dict(self.requests_rejected),
            "truncated_values": self.truncated_values,
            "dropped_attributes": self.dropped_attributes,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Set the counters from `export`'s output (missing ones to 0)."""
        self.spans_received = int(state.get("spans_received", 0))
        self.spans_rejected = int(state.get("spans_rejected", 0))
        self.requests = {(str(p), str(st)): int(n) for p, st, n in state.get("requests", [])}
        self.spans_rejected_by_reason = {
            str(k): int(v) for k, v in state.get("spans_rejected_by_reason", {}).items()}
        self.requests_rejected = {
            str(k): int(v) for k, v in state.get("requests_rejected", {}).items()}
        self.truncated_values = int(state.get("truncated_values", 0))
        self.dropped_attributes = int(state.get("dropped_attributes", 0))


def _cumulative(counts: Sequence[int], bounds: Sequence[float]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    acc = 0
    for bound, n in zip(bounds, counts, strict=False):
        acc += n
        out.append((repr(float(bound)), float(acc)))
    acc += counts[-1]
    out.append(("+Inf", float(acc)))
    return out


def service_graph_families(totals: EdgeTotals) -> list[Metric]:
    """Tempo's service-graph series over ``totals``, read at call time (no copies kept)."""
    total = CounterMetricFamily(
        "traces_service_graph_request", "Requests between two nodes", labels=EDGE_LABELS
    )
    failed = CounterMetricFamily(
        "traces_service_graph_request_failed",
        "Failed requests between two nodes",
        labels=EDGE_LABELS,
    )
    server = HistogramMetricFamily(
        "traces_service_graph_request_server_seconds",
        "Time for a request between two nodes as seen from the server",
        labels=EDGE_LABELS,
    )
    client = HistogramMetricFamily(
        "traces_service_graph_request_client_seconds",
        "Time for a request between two nodes as seen from the client",
        labels=EDGE_LABELS,
    )
    for key, e in totals.items():
        labels = list(key)
        total.add_metric(labels, e.total)
        failed.add_metric(labels, e.failed)
        server.add_metric(labels, _cumulative(e.server, totals.buckets), e.server_sum)
        client.add_metric(labels, _cumulative(e.client, totals.buckets), e.client_sum)
    return [total, failed, server, client]


class IngestCollector(Collector):
    """The receiver's `IngestCounters` on ``/metrics``."""

    def __init__(self, ingest: IngestCounters) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        c = self.ingest
        yield CounterMetricFamily("conway_spans_received", "Spans decoded and ingested",
                                  value=c.spans_received)
        yield CounterMetricFamily(
            "conway_spans_rejected",
            "Spans refused (OTLP partial success): invalid, or outside the time window",
            value=c.spans_rejected)
        by_reason = CounterMetricFamily(
            "conway_spans_rejected_by_reason", "Spans refused, by reason (see collector.limits)",
            labels=["reason"])
        for reason, n in sorted(c.spans_rejected_by_reason.items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        refused = CounterMetricFamily(
            "conway_requests_rejected", "Whole requests refused with a 4xx/5xx, by reason",
            labels=["reason"])
        for reason, n in sorted(c.requests_rejected.items()):
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily(
            "conway_attribute_values_truncated",
            "String values, span names and messages cut to the value size limit",
            value=c.truncated_values)
        yield CounterMetricFamily(
            "conway_attributes_dropped",
            "Attributes (or array items) dropped beyond the per-span count limit",
            value=c.dropped_attributes)
        requests = CounterMetricFamily("conway_http_requests", "HTTP requests answered",
                                       labels=["path", "status"])
        for (path, status), n in sorted(c.requests.items()):
            requests.add_metric([path, status], n)
        yield requests


def install(service: CollectorService, config: CollectorConfig) -> IngestCounters:
    """Register the receiver's counters (``parts["ingest"]``: the app counts into them, the
    checkpoint saves them) and their collector."""
    counters = IngestCounters()
    service.parts["ingest"] = counters
    service.metrics.register(IngestCollector(counters))
    return counters


def make_registry(*collectors: Collector) -> CollectorRegistry:
    """A fresh registry holding ``collectors`` (no global state between services or tests)."""
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    return registry
