"""Time travel on the dashboard, as plain functions: what each control does to the moment
shown, what the bar and the banner say, that positions do not move between now and then, and
the Prometheus source asking every query at the moment shown (its HTTP API's JSON served by
``httpx.MockTransport``). The browser tests drive the real thing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from dash import Dash
from dash_graphs import demo_graph
from dash_procs import CATALOG
from dash_tree import text

from dashboard import app as app_module
from dashboard import timetravel as tt
from dashboard.promsource import FAILED, TOTAL, CatalogOwnership, PrometheusSource
from dashboard.state import Fetched, next_state

NOW = 1_700_000_000.0
HISTORY = {"from": NOW - 900, "to": NOW, "earliest_at": NOW - 840}


@pytest.fixture(scope="module")
def dash_app() -> Dash:
    return app_module.create_app(app_module.Settings(collector_url="http://127.0.0.1:9"))


def test_steps_slider_and_live_move_the_moment_within_the_history() -> None:
    step = {"type": "tt-step", "index": -60}
    assert tt.next_at(None, step, None, HISTORY, NOW) == NOW - 60  # from live: back 1 min
    assert tt.next_at(NOW - 60, step, None, HISTORY, NOW) == NOW - 120
    back10 = {"type": "tt-step", "index": -600}
    assert tt.next_at(NOW - 600, back10, None, HISTORY, NOW) == NOW - 840  # clamped
    fwd = {"type": "tt-step", "index": 60}
    assert tt.next_at(NOW - 30, fwd, None, HISTORY, NOW) is None  # past the newest: live
    assert tt.next_at(NOW - 300, "tt-slider", NOW - 200.4, HISTORY, NOW) == NOW - 200
    assert tt.next_at(NOW - 300, "tt-slider", NOW - 1, HISTORY, NOW) is None
    assert tt.next_at(NOW - 300, "tt-live", None, HISTORY, NOW) is None
    # Without a range from the source yet, the default retention bounds it.
    assert tt.next_at(None, back10, None, None, NOW) == NOW - 600


def test_at_in_the_url_is_epoch_seconds_or_rfc3339() -> None:
    assert tt.parse_at("1700000000") == NOW
    assert tt.parse_at("2023-11-14T22:13:20Z") == NOW
    for bad in (None, "", "soon", "2023-11-14T22:13:20", "nan", "-5", ["1"]):
        assert tt.parse_at(bad) is None, bad
    assert tt.url_for(None) == "/" and tt.url_for(NOW - 0.4) == f"/?at={int(NOW)}"


def test_the_bar_says_live_or_which_moment(dash_app: Dash) -> None:
    assert tt.marker(None, HISTORY, NOW).startswith("Live · history back to")
    past = tt.marker(NOW - 360, HISTORY, NOW)
    assert past.startswith("Viewing") and "6 min ago" in past


def test_the_past_keeps_positions_and_the_banner_says_history(dash_app: Dash) -> None:
    live = next_state(None, Fetched(graph=demo_graph(), history=HISTORY), "http://c", NOW)
    assert live["at"] is None and live["history"] == HISTORY
    # The past graph lacks a service added since and has payment failing, with its incident.
    then = demo_graph(failing="payment")
    then["nodes"] = [n for n in then["nodes"] if n["id"] != "ad"]
    incident = {"id": "i1", "status": "open", "started_at": NOW - 400,
                "root_cause": {"service": "payment", "team": "payments", "kind": "errors",
                               "evidence": {"summary": "payment fails"}},
                "impacted": [{"service": "checkout", "team": "orders"}],
                "page": {"team": "payments"}}
    past = next_state(live, Fetched(graph=then, incidents=[incident], history=HISTORY),
                      "http://c", NOW + 2, at=NOW - 360)
    assert past["at"] == NOW - 360
    assert past["positions"] == live["positions"]
    back = next_state(past, Fetched(graph=demo_graph(), history=HISTORY), "http://c", NOW + 4)
    assert back["positions"] == live["positions"] and back["at"] is None

    _collector, page, status = app_module.render_banners(past, NOW + 2)
    shown = text(page)
    assert "History: incidents open at" in shown and "payment" in shown
    assert status.startswith("viewing") and "(history)" in status
    _c, live_page, live_status = app_module.render_banners(back, NOW + 4)
    assert live_page is None and live_status.startswith("updated")
    quiet = next_state(live, Fetched(graph=demo_graph(), incidents=[], history=HISTORY),
                       "http://c", NOW + 2, at=NOW - 800)
    assert "no incident was open" in text(app_module.render_banners(quiet, NOW + 2)[1])


def _series(value: float, t: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [t, str(value)]}


def test_prometheus_source_asks_every_query_at_the_moment_shown() -> None:
    at = NOW - 600
    asked: list[float] = []

    def prometheus(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        t = float(request.url.params["time"])
        asked.append(t)
        result: list[dict[str, Any]] = []
        # payment failed half its calls in the minute before `at`, none since.
        if query == TOTAL:
            calls = 100.0 if t < at - 1 else 200.0 if t <= at else 800.0 if t < NOW - 1 \
                else 900.0
            result = [_series(calls, t, client="checkout", server="payment",
                              connection_type="")]
        elif query == FAILED:
            failed = 0.0 if t < at - 1 else 50.0
            result = [_series(failed, t, client="checkout", server="payment",
                              connection_type="")]
        return httpx.Response(200, json={"status": "success",
                                         "data": {"resultType": "vector", "result": result}})

    source = PrometheusSource("http://prom", CatalogOwnership(CATALOG), clock=lambda: NOW,
                              transport=httpx.MockTransport(prometheus))
    then = source.graph(60.0, at=at)
    assert max(asked) == at and then["at"] == at
    health = {n["id"]: n["health"] for n in then["nodes"]}
    assert health["payment"] == "failing"
    assert then["incidents"] == [] and any("past time" in n for n in then["notes"])
    assert then["history"]["to"] == NOW
    asked.clear()
    now = source.graph(60.0)
    assert max(asked) == NOW and "at" not in now
    assert {n["id"]: n["health"] for n in now["nodes"]}["payment"] == "healthy"
    source.close()
