"""``/metrics``: the service-graph series as Tempo names them, and the collector's own counters.

`EdgeTotals` accumulates, cumulative since start, what Tempo's service-graph processor exports
(``traces_service_graph_request_total``, ``..._failed_total``, and the ``..._server_seconds``
and ``..._client_seconds`` histograms with Tempo's default buckets, labels ``client``,
``server``, ``connection_type``), so Grafana's service graph reads a Conway collector as it
reads Tempo. `ConwayCollector` is a ``prometheus_client`` Collector over those totals and the
counters of ingest, pairing, graph limits and scraping; each service registers it in its own
``CollectorRegistry``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

    def observe(self, call: Call) -> None:
        key = (call.client, call.server, call.connection_type)
        e = self._edges.get(key)
        if e is None:
            e = self._edges[key] = _EdgeTotal(len(self.buckets))
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

    def items(self) -> Iterator[tuple[tuple[str, str, str], _EdgeTotal]]:
        return iter(sorted(self._edges.items()))

    def total(self, client: str, server: str) -> int:
        return sum(e.total for k, e in self._edges.items() if k[:2] == (client, server))

    def failed(self, client: str, server: str) -> int:
        return sum(e.failed for k, e in self._edges.items() if k[:2] == (client, server))


@dataclass
class IngestCounters:
    """What the HTTP receiver counts: spans in and refused, requests by path and status."""

    spans_received: int = 0
    spans_rejected: int = 0
    requests: dict[tuple[str, str], int] = field(default_factory=dict)

    def request(self, path: str, status: int) -> None:
        key = (path, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1


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
    ) -> None:
        self.graph = graph
        self.ingest = ingest
        self.scraper = scraper

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
        yield counter("conway_spans_rejected", "Spans refused by the decoders (partial success)",
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
        yield GaugeMetricFamily("conway_pairing_pending", "Halves waiting for their other half",
                                value=len(self.graph.pairer))
        yield counter("conway_graph_dropped_nodes",
                      "Spans or calls dropped because the node limit was reached",
                      self.graph.dropped_nodes)
        yield counter("conway_graph_dropped_edges",
                      "Calls dropped because the edge limit was reached", self.graph.dropped_edges)
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


def make_registry(collector: ConwayCollector) -> CollectorRegistry:
    """A fresh registry per service instance (no global state between services or tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
