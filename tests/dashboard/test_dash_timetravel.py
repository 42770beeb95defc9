"""Time travel on the dashboard, as plain functions: what each control does to the moment
shown, what the bar and the banner say, that positions do not move between now and then, and
the Prometheus source asking every query at the moment shown (its HTTP API's JSON served by
``httpx.MockTransport``). The browser tests drive the real thing."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from dash import Dash
from dash_graphs import demo_graph
from dash_procs import CATALOG
from dash_tree import hrefs, text

from dashboard import app as app_module
from dashboard import timetravel as tt
from dashboard.promsource import FAILED, TOTAL, CatalogOwnership, PrometheusSource
from dashboard.state import Fetched, next_state

NOW = 1_700_000_000.0
EVIL = "<img src=x onerror=alert(1)>"
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


def test_the_bar_says_when_the_moment_came_from_the_archive(dash_app: Dash) -> None:
    # Beyond the collector's retained statistics, ``?at=`` answers the archived minute
    # nearest the moment (collector.archive): the bar says which.
    week = {"from": NOW - 7 * 86_400, "to": NOW, "earliest_at": NOW - 7 * 86_400}
    assert "(7.0 days)" in tt.marker(None, week, NOW)
    assert tt.when(NOW - 7 * 86_400, NOW) == time.strftime(
        "%a %d %b %H:%M:%S", time.localtime(NOW - 7 * 86_400))
    assert "(3.0 h)" in tt.marker(None, {**week, "earliest_at": NOW - 3 * 3600}, NOW)
    old = demo_graph(failing="payment")
    old["archived"] = {"at": NOW - 7200, "window_s": 60.0}
    past = next_state(None, Fetched(graph=old, incidents=[], history=week), "http://c", NOW,
                      at=NOW - 7210)
    assert past["archived"] == {"at": NOW - 7200, "window_s": 60.0}
    info = tt.bar_info(past)
    _min, said, look, _live = tt.bar(NOW - 7210, info, 0)
    assert "from the archive: the 60 s ending" in said and look == "tt-bar past"
    assert tt.clock(NOW - 7200) in said
    # Back to live, or to a retained moment: no archive note.
    live = next_state(past, Fetched(graph=demo_graph(), history=week), "http://c", NOW + 2)
    assert live["archived"] is None
    recent = next_state(live, Fetched(graph=demo_graph(), incidents=[], history=week),
                        "http://c", NOW + 4, at=NOW - 60)
    assert "archive" not in tt.bar(NOW - 60, tt.bar_info(recent), 0)[1]


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
    # Live, during an incident: a link to the minute before it started, to compare.
    evil = {**incident, "root_cause": {**incident["root_cause"], "service": EVIL}}
    during = next_state(back, Fetched(graph=then, incidents=[evil]), "http://c", NOW + 6)
    banner = app_module.render_banners(during, NOW + 6)[1]
    assert f"/?at={int(NOW - 460)}" in hrefs(banner)
    assert f"the minute before {EVIL} started" in text(banner)  # drawn as text, escaped
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


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_moment_the_collector_refuses_shows_live_and_says_why(dash_app: Dash) -> None:
    """Against a real collector (in-process, injected clock): a moment in its history is
    fetched as the past; one outside it (an old link) shows the live graph with the
    collector's reason on the bar, and is not asked for again."""
    from procs import serve

    from collector import wiring
    from collector.config import CollectorConfig, DiagnosisConfig
    from collector.replay import dependencies_to_spans
    from dashboard.client import CollectorClient
    from dashboard.state import fetch_moment

    clock = _Clock(NOW)
    service = wiring.build_service(
        CollectorConfig(diagnosis=DiagnosisConfig(evaluate_interval_s=3600)), clock)
    deps = [{"parent": "frontend", "child": "cart", "callCount": 1}]
    for _ in range(30):
        service.ingest(dependencies_to_spans(deps, int(clock.t * 1e9), 3), now=clock.t)
        clock.t += 1
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()
    with serve(wiring.build_app(service)) as url, CollectorClient(url) as client:
        fetched, shown, refusal = fetch_moment(client, 60.0, NOW + 20, None)
        assert shown == NOW + 20 and refusal is None and fetched.graph is not None
        assert fetched.graph["at"] == NOW + 20 and fetched.incidents == []
        assert fetched.history is not None and fetched.history["to"] == NOW + 30
        past = next_state(None, fetched, url, NOW + 31, at=shown)
        assert past["at"] == NOW + 20

        old = NOW - 3600
        fetched, shown, refusal = fetch_moment(client, 60.0, old, past)
        assert shown is None and fetched.graph is not None and "at" not in fetched.graph
        assert refusal is not None and "older than the retained history" in refusal
        state = next_state(past, fetched, url, NOW + 32, refused=(old, refusal))
        assert state["at"] is None and state["at_refused"]["at"] == old
        _min, text, cls, _live_off = tt.bar(old, tt.bar_info(state), 0)
        assert text.startswith("Cannot show") and "showing live" in text
        assert cls == "tt-bar refused"
        # The refusal is remembered: the next refresh goes straight to the live graph.
        again, shown, why = fetch_moment(client, 60.0, old, state)
        assert shown is None and why == refusal and "at" not in (again.graph or {})
