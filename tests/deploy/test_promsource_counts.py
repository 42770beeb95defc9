"""The Prometheus source's arithmetic on cases the live test cannot stage cheaply: a collector
that restarted (counter reset) next to a new one, and an edge seen both as direct and as
virtual. Prometheus' answers are its HTTP API's JSON, served by ``httpx.MockTransport``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from deploy_procs import CATALOG

from dashboard.client import ApiError
from dashboard.promsource import FAILED, TOTAL, CatalogOwnership, PrometheusSource

NOW = 1_800_000_000.0
WINDOW = 60.0


def series(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [NOW, str(value)]}


# (metric, at window start?) -> series. Collector A restarted inside the window (10 -> 4);
# collector B appeared inside it. checkout -> payment was direct on A, virtual on B (B saw
# only client halves while payment was down).
ANSWERS = {
    (TOTAL, True): [
        series(10, __name__=TOTAL, instance="a", client="checkout", server="payment",
               connection_type=""),
    ],
    (TOTAL, False): [
        series(4, __name__=TOTAL, instance="a", client="checkout", server="payment",
               connection_type=""),
        series(7, __name__=TOTAL, instance="b", client="checkout", server="payment",
               connection_type="virtual_node"),
        series(3, __name__=TOTAL, instance="b", client="user", server="frontend",
               connection_type="virtual_node"),
    ],
    (FAILED, True): [],
    (FAILED, False): [
        series(2, __name__=FAILED, instance="b", client="checkout", server="payment",
               connection_type="virtual_node"),
    ],
}


def prometheus(request: httpx.Request) -> httpx.Response:
    query = request.url.params["query"]
    if query in (TOTAL, FAILED):
        start = float(request.url.params["time"]) < NOW
        result = ANSWERS[(query, start)]
    elif query.startswith("max by (service) (up"):
        result = [series(0, service="payment"), series(1, service="checkout")]
    else:  # latency quantiles: none in this case
        result = []
    return httpx.Response(200, json={"status": "success",
                                     "data": {"resultType": "vector", "result": result}})


def test_counts_merge_collectors_through_resets_and_new_series() -> None:
    source = PrometheusSource("http://prometheus.test", CatalogOwnership(CATALOG),
                              clock=lambda: NOW, transport=httpx.MockTransport(prometheus))
    with source:
        graph = source.graph(WINDOW)
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    pay = edges[("checkout", "payment")]
    # 4 since A's reset + 7 since B appeared; B's 2 failures.
    assert (pay["calls"], pay["errors"]) == (11, 2)
    assert pay["rate_rps"] == round(11 / WINDOW, 6)
    # Any collector that saw both halves makes the edge direct.
    assert pay["connection_type"] == ""
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["payment"]["kind"] == "service" and nodes["user"]["kind"] == "virtual"
    # Prometheus' failed scrape of payment makes it down, whatever its error ratio.
    assert nodes["payment"]["up"] is False and nodes["payment"]["health"] == "down"
    # Scraped but without traffic in the window: shown, healthy.
    assert nodes["checkout"]["calls"] == 0 and nodes["checkout"]["health"] == "healthy"
    assert nodes["payment"]["p95_ms"] is None


def test_a_prometheus_error_says_what_it_answered() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"status": "error", "errorType": "execution",
                                         "error": "query processing would load too many samples"})

    source = PrometheusSource("http://prometheus.test", CatalogOwnership(None),
                              transport=httpx.MockTransport(broken))
    with pytest.raises(ApiError) as err:
        source.graph(WINDOW)
    assert err.value.status == 422
    assert "too many samples" in str(err.value) and "Prometheus" in str(err.value)
