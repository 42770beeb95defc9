from __future__ import annotations

from typing import Any

from dash_graphs import demo_graph
from dash_tree import components, hrefs, text

from dashboard import views
from dashboard.client import ApiError
from dashboard.state import Fetched, initial_state, is_stale, next_state
from dashboard.text import safe_url

NOW = 1_700_000_000.0
EVIL = "<img src=x onerror=alert(1)>"


def incident(**over: Any) -> dict[str, Any]:
    inc = {
        "id": "inc-1",
        "status": "open",
        "started_at": NOW - 125,
        "updated_at": NOW - 5,
        "resolved_at": None,
        "confidence": 0.87,
        "root_cause": {
            "service": "payment",
            "team": "payments",
            "kind": "errors",
            "evidence": {"summary": "payment fails 48% of its calls", "trace_ids": []},
        },
        "impacted": [{"service": "checkout", "team": "orders"},
                     {"service": "frontend", "team": "web"}],
        "page": {"team": "payments", "on_call": "Dana Payne", "channel": "#payments-oncall",
                 "runbook": "https://runbooks.example/payments"},
        "version_change": {"service": "payment", "from": "1.4.0", "to": "1.5.0-bad",
                           "at": NOW - 130},
    }
    inc.update(over)
    return inc


def test_who_to_page_banner_names_root_cause_team_oncall_and_more() -> None:
    banner = views.page_banner([incident()], NOW)
    t = text(banner)
    for expected in ("Page ", "payments", "Dana Payne", "#payments-oncall", "payment",
                     "(errors)", "2 min ago", "confidence 87%", "1.4.0 → 1.5.0-bad",
                     "checkout", "(orders)", "frontend", "(web)", "fails 48%"):
        assert expected in t, expected
    assert "https://runbooks.example/payments" in hrefs(banner)
    assert "/services/checkout" in hrefs(banner)


def test_no_banner_without_an_open_incident() -> None:
    assert views.page_banner([], NOW) is None
    assert views.page_banner([incident(status="resolved")], NOW) is None


def test_javascript_runbook_is_refused_and_said_so() -> None:
    for bad in ("javascript:alert(1)", "JavaScript:alert(1)", " javascript:x", "java\tscript:x",
                "data:text/html,hi", "//evil.example/x", "ftp://x.example/y"):
        assert safe_url(bad) is None, bad
        banner = views.page_banner(
            [incident(page={"team": "payments", "runbook": bad})], NOW
        )
        assert bad not in hrefs(banner)
        assert "only http/https links are allowed" in text(banner)
    assert safe_url("http://wiki.example/run") == "http://wiki.example/run"


def test_telemetry_text_stays_text() -> None:
    inc = incident(root_cause={"service": EVIL, "team": EVIL, "kind": "errors",
                               "evidence": {"summary": EVIL}},
                   impacted=[{"service": EVIL, "team": EVIL}],
                   page={"team": EVIL, "on_call": EVIL, "channel": EVIL, "runbook": None})
    banner = views.page_banner([inc], NOW)
    assert EVIL in text(banner)
    kinds = {type(c).__name__ for c in components(banner)}
    assert "Img" not in kinds and "Markdown" not in kinds
    # A link to the hostile service's page is percent-encoded.
    assert "/services/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E" in hrefs(banner)


def test_unreachable_collector_banner_says_where_and_since_when() -> None:
    state = initial_state("http://127.0.0.1:9")
    state = next_state(state, Fetched(graph=demo_graph()), "http://127.0.0.1:9", NOW - 60)
    assert views.collector_banner(state, NOW) is None
    assert not is_stale(state)
    down = Fetched(error="collector unreachable at http://127.0.0.1:9 (ConnectError)",
                   unreachable=True)
    state = next_state(state, down, "http://127.0.0.1:9", NOW - 30)
    state = next_state(state, down, "http://127.0.0.1:9", NOW)
    banner = views.collector_banner(state, NOW)
    t = text(banner)
    assert "Collector unreachable at http://127.0.0.1:9 since" in t
    assert "(30 s)" in t
    assert "stale since" in t
    # The last good graph is kept, and marked stale.
    assert state["graph"] == demo_graph()
    assert is_stale(state)


def test_unreachable_prometheus_source_is_called_prometheus() -> None:
    down = Fetched(error="prometheus unreachable at http://127.0.0.1:9 (ConnectError)",
                   unreachable=True)
    state = next_state(None, down, "http://127.0.0.1:9", NOW, "Prometheus")
    t = text(views.collector_banner(state, NOW))
    assert "Prometheus unreachable at http://127.0.0.1:9 since" in t
    assert "Collector" not in t


def test_recovery_clears_the_unreachable_state() -> None:
    url = "http://127.0.0.1:9"
    state = next_state(None, Fetched(error="x", unreachable=True), url, NOW)
    assert state["down_since"] == NOW and state["graph"] is None
    assert "No graph received yet" in text(views.collector_banner(state, NOW + 1))
    state = next_state(state, Fetched(graph=demo_graph()), url, NOW + 2)
    assert state["reachable"] and state["down_since"] is None
    assert views.collector_banner(state, NOW + 2) is None


def test_incidents_missing_from_the_collector_keep_the_graph_going() -> None:
    fetched = Fetched(graph=demo_graph(), incidents=None,
                      incidents_error=str(ApiError("collector answered 404", status=404)))
    state = next_state(None, fetched, "http://c", NOW)
    assert state["reachable"] and state["incidents"] == []
    assert state["positions"]["groups"]


def test_details_panel_reads_live_numbers_for_the_selection() -> None:
    g = demo_graph(rate=7.0)
    t = text(views.details_panel(g, "s:cart"))
    assert "cart" in t and "7.0 rps" in t and "orders" in t
    t = text(views.details_panel(g, 'e:["checkout", "cart"]'))
    assert "checkout" in t and "cart" in t and "7.0 rps" in t
    assert "not in the current window" in text(views.details_panel(g, "s:gone"))
