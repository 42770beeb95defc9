"""``GET /metrics`` on the dashboard: its own limits and what they dropped, for Prometheus.

The dashboard keeps the states its refreshes made lately (``dashboard.recent``), bounded by
a count and by the nodes and edges their graphs hold; a state pushed out before a callback
read it is answered with no update (the next refresh brings one), so evictions are a visible
limit, not a silent one. Reads of one moment by several callbacks share one fetch
(``state.SharedFetches``). Read-only: rendering the page changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import flask
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dashboard.recent import RecentStates
from dashboard.state import SharedFetches


class DashboardCollector(Collector):
    def __init__(self, recent: RecentStates, fetches: SharedFetches) -> None:
        self.recent = recent
        self.fetches = fetches

    def collect(self) -> Iterator[Metric]:
        states, elements = self.recent.held()
        yield GaugeMetricFamily("conway_dashboard_recent_states",
                                "States of recent refreshes kept for the callbacks that read "
                                "them.", value=states)
        yield GaugeMetricFamily("conway_dashboard_recent_states_limit",
                                "Most recent states kept.", value=self.recent.size)
        yield GaugeMetricFamily("conway_dashboard_recent_elements",
                                "Nodes and edges of the graphs the recent states hold (a graph "
                                "shared by several states counted once).", value=elements)
        yield GaugeMetricFamily("conway_dashboard_recent_elements_limit",
                                "Most nodes and edges the recent states may hold (~460 B each).",
                                value=self.recent.max_elements)
        yield CounterMetricFamily("conway_dashboard_recent_evicted",
                                  "Recent states pushed out by either limit (a callback asking "
                                  "for one gets no update until the next refresh).",
                                  value=self.recent.evicted)
        yield CounterMetricFamily("conway_dashboard_shared_fetches",
                                  "Reads of the collector answered by another callback's "
                                  "fetch of the same moment.", value=self.fetches.shared)


def install(server: flask.Flask, recent: RecentStates, fetches: SharedFetches) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DashboardCollector(recent, fetches))

    def metrics() -> flask.Response:
        return flask.Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    server.add_url_rule("/metrics", "conway_metrics", metrics, methods=["GET"])
