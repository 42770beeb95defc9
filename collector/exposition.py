"""``/metrics``: the service-graph series as Tempo names them, and the collector's own counters.

`EdgeTotals` accumulates, cumulative since start, what Tempo's service-graph processor exports
(``traces_service_graph_request_total``, ``..._failed_total``, and the ``..._server_seconds``
and ``..._client_seconds`` histograms with Tempo's default buckets, labels ``client``,
``server``, ``connection_type``), so Grafana's service graph reads a Conway collector as it
reads Tempo. `ConwayCollector` is a ``prometheus_client`` Collector over those totals and the
counters of ingest, pairing, graph limits, scraping and the diagnosis' head sampling; each
service registers it in its own ``CollectorRegistry``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from collector.model import Call

if TYPE_CHECKING:
    from collector.graph import TrafficGraph
    from collector.scraper import Scraper

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


@dataclass
class EdgeTotals:
    """Cumulative per-edge counts and latency histograms. A missing half observes 0 s, as Tempo
    and the otelcol connector do, so histogram counts always equal the request total."""

    buckets: Sequence[float] = TEMPO_BUCKETS
    _edges: dict[tuple[str, str, str], _EdgeTotal] = field(default_factory=dict)
    # Keys changed / forgotten since the last checkpoint; None while no checkpoint tracks them.
    changed: set[tuple[str, str, str]] | None = None
    forgotten: set[tuple[str, str, str]] = field(default_factory=set)

    def observe(self, call: Call) -> None:
        key = (call.client, call.server, call.connection_type)
        e = self._edges.get(key)
        if e is None:
            e = self._edges[key] = _EdgeTotal(len(self.buckets))
        if self.changed is not None:
            self.changed.add(key)
        e.total += 1
        if call.client_error or call.server_error:
            e.failed += 1
        s = call.server_duration_ns / 1e9 if call.server_duration_ns > 0 else 0.0
        c = call.client_duration_ns / 1e9 if call.client_duration_ns > 0 else 0.0
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        e.server[bisect_left(self.buckets, s)] += 1
        e.client[bisect_left(self.buckets, c)] += 1
        e.server_sum += s
        e.client_sum += c

    def forget(self, client: str, server: str) -> None:
        for key in [k for k in self._edges if k[0] == client and k[1] == server]:
            del self._edges[key]
            if self.changed is not None:
                self.changed.discard(key)
                self.forgotten.add(key)

    def get(self, key: tuple[str, str, str]) -> _EdgeTotal | None:
        return self._edges.get(key)

    def restore(self, key: tuple[str, str, str], total: int, failed: int, server: list[int],
                client: list[int], server_sum: float, client_sum: float) -> None:
        """Put back one edge's totals saved by a checkpoint (histograms of the same buckets)."""
        e = self._edges[key] = _EdgeTotal(len(self.buckets))
        if len(server) == len(e.server) and len(client) == len(e.client):
            e.server, e.client = list(server), list(client)
        e.total, e.failed, e.server_sum, e.client_sum = total, failed, server_sum, client_sum

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

    def state(self) -> dict[str, object]:
        """Plain JSON-able state, for checkpoints."""
        return {
            "spans_received": self.spans_received, "spans_rejected": self.spans_rejected,
            "requests": [[p, st, n] for (p, st), n in self.requests.items()],
            "spans_rejected_by_reason": dict(self.spans_rejected_by_reason),
            "requests_rejected": dict(self.requests_rejected),
            "truncated_values": self.truncated_values,
            "dropped_attributes": self.dropped_attributes,
        }

    def restore(self, state: dict[str, Any]) -> None:
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


class ConwayCollector(Collector):
    """Yields the metric families from live objects at scrape time (no copies kept)."""

    def __init__(
        self,
        graph: TrafficGraph,
        ingest: IngestCounters,
        scraper: Scraper | None = None,
        diagnosis: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.graph = graph
        self.ingest = ingest
        self.scraper = scraper
        self.diagnosis = diagnosis  # the diagnosis' counters(), when it is installed

    def collect(self) -> Iterator[Metric]:
        totals = self.graph.totals
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
        yield total
        yield failed
        yield server
        yield client

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter("conway_spans_received", "Spans decoded and ingested",
                      self.ingest.spans_received)
        yield counter("conway_spans_rejected",
                      "Spans refused (OTLP partial success): invalid, or outside the time window",
                      self.ingest.spans_rejected)
        pc = self.graph.pairer.counters
        yield counter("conway_pairing_paired", "Calls from a client and a server half that met",
                      pc.paired)
        yield counter("conway_pairing_expired", "Halves that expired without their other half",
                      pc.expired)
        yield counter("conway_pairing_dropped",
                      "Spans dropped from pairing because the pending store was full", pc.dropped)
        yield counter("conway_pairing_unpaired", "Expired halves that produced no call",
                      pc.unpaired)
        yield counter("conway_pairing_virtual", "Expired client halves turned into virtual calls",
                      pc.virtual)
        yield counter("conway_pairing_duplicates",
                      "Spans seen lately (same trace and span id: a retry, a replayed batch), "
                      "dropped before pairing", pc.duplicates)
        yield GaugeMetricFamily("conway_pairing_pending", "Halves waiting for their other half",
                                value=len(self.graph.pairer))
        yield counter("conway_graph_dropped_nodes",
                      "Spans or calls dropped because the node limit was reached",
                      self.graph.dropped_nodes)
        yield counter("conway_graph_dropped_edges",
                      "Calls dropped because the edge limit was reached", self.graph.dropped_edges)
        by_reason = CounterMetricFamily(
            "conway_spans_rejected_by_reason", "Spans refused, by reason (see collector.limits)",
            labels=["reason"])
        for reason, n in sorted(self.ingest.spans_rejected_by_reason.items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        refused = CounterMetricFamily(
            "conway_requests_rejected", "Whole requests refused with a 4xx/5xx, by reason",
            labels=["reason"])
        for reason, n in sorted(self.ingest.requests_rejected.items()):
            refused.add_metric([reason], n)
        yield refused
        yield counter("conway_attribute_values_truncated",
                      "String values, span names and messages cut to the value size limit",
                      self.ingest.truncated_values)
        yield counter("conway_attributes_dropped",
                      "Attributes (or array items) dropped beyond the per-span count limit",
                      self.ingest.dropped_attributes)
        g = self.graph
        limits = GaugeMetricFamily("conway_limit", "Configured caps (see /api/graph limits)",
                                   labels=["name"])
        usage = GaugeMetricFamily("conway_limit_used", "Current use of each cap",
                                  labels=["name"])
        for name, cap, used in g.limit_usage():
            limits.add_metric([name], cap)
            usage.add_metric([name], used)
        yield limits
        yield usage
        yield counter("conway_versions_dropped",
                      "Versions forgotten past the per-service cap", g.versions.dropped)
        yield counter("conway_stats_late_dropped",
                      "Calls older than the retention when they arrived",
                      g.nodes.late_dropped + g.edges.late_dropped)
        requests = CounterMetricFamily("conway_http_requests", "HTTP requests answered",
                                       labels=["path", "status"])
        for (path, status), n in sorted(self.ingest.requests.items()):
            requests.add_metric([path, status], n)
        yield requests
        failures = CounterMetricFamily("conway_scrape_failures", "Failed scrapes per target",
                                       labels=["target", "service"])
        up = GaugeMetricFamily("conway_scrape_up", "1 when the last scrape of a target worked",
                               labels=["target", "service"])
        if self.scraper is not None:
            for t in self.scraper.targets():
                failures.add_metric([t.url, t.service], t.failures)
                up.add_metric([t.url, t.service], 1.0 if t.up else 0.0)
        yield failures
        yield up
        if self.diagnosis is not None:
            d = self.diagnosis()
            yield counter("conway_diagnosis_spans_sampled_out",
                          "Spans the diagnosis left out by head sampling, above its span budget",
                          d.get("spans_sampled_out", 0))
            yield counter("conway_diagnosis_traces_sampled_out",
                          "Traces (root spans) the diagnosis left out by head sampling",
                          d.get("traces_sampled_out", 0))
            yield GaugeMetricFamily("conway_diagnosis_keep_fraction",
                                    "Share of traces the diagnosis analyses now (1: all; below "
                                    "1 above its span budget)", value=d.get("keep_fraction", 1.0))
            yield counter("conway_diagnosis_spans_duplicate",
                          "Spans the diagnosis dropped as re-sent (same trace and span id "
                          "seen lately)", d.get("spans_duplicate", 0))
            yield counter("conway_diagnosis_traces_finished_early",
                          "Traces finished before going quiet (trace cap, pending-spans cap "
                          "or maximum age)", d.get("traces_finished_early", 0))
            yield counter("conway_diagnosis_traces_finished_max_age",
                          "Traces finished at their maximum age, still receiving spans",
                          d.get("traces_finished_max_age", 0))
            yield counter("conway_diagnosis_traces_finished_span_cap",
                          "Traces finished early because all pending traces held the most "
                          "spans the memory budget allows", d.get("traces_finished_span_cap", 0))
            yield GaugeMetricFamily("conway_diagnosis_spans_pending",
                                    "Spans waiting in pending traces",
                                    value=d.get("spans_pending", 0))
            yield GaugeMetricFamily("conway_memory_budget_bytes",
                                    "The memory budget the caps are derived from",
                                    value=d.get("memory_budget_bytes", 0))
            yield counter("conway_diagnosis_evaluations", "Evaluation ticks run",
                          d.get("evaluations", 0))
            yield GaugeMetricFamily("conway_diagnosis_evaluation_seconds",
                                    "What the last evaluation tick took",
                                    value=d.get("evaluation_seconds", 0.0))
            yield GaugeMetricFamily("conway_diagnosis_evaluation_interval_seconds",
                                    "Seconds between evaluation ticks now (longer than the "
                                    "configured interval when a tick takes long)",
                                    value=d.get("evaluation_interval_seconds", 0.0))


def make_registry(collector: ConwayCollector) -> CollectorRegistry:
    """A fresh registry per service instance (no global state between services or tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
