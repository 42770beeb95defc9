"""Callbacks and page builders called as plain functions (the app is created once so the
pages are registered; nothing here talks to a network)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from dash import Dash, no_update
from dash_graphs import big_graph, demo_graph
from dash_tree import components, hrefs, text

from dashboard import app as app_module
from dashboard import elements as E
from dashboard import figures
from dashboard.state import Fetched, next_state

NOW = 1_700_000_000.0
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def dash_app() -> Dash:
    return app_module.create_app(app_module.Settings(collector_url="http://127.0.0.1:9"))


def page(dash_app: Dash, name: str) -> ModuleType:
    return importlib.import_module(f"dashboard.pages.{name}")


def _state(graph: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return next_state(None, Fetched(graph=graph, **kw), "http://c", NOW)


def test_pages_are_registered_with_deep_links(dash_app: Dash) -> None:
    import dash

    paths = {p.get("path_template") or p["path"] for p in dash.page_registry.values()}
    assert {"/", "/services/<name>", "/teams", "/teams/<name>", "/demo"} <= paths


def test_overview_render_keeps_positions_and_marks_stale(dash_app: Dash) -> None:
    ov = page(dash_app, "overview")
    state = _state(demo_graph(rate=1.0))
    els1, sheet1, _details, info, placeholder, wrap, _note = ov.render(state, None, None)
    assert placeholder == {"display": "none"} and wrap == "graph-wrap"
    assert "15 nodes" in info
    state2 = next_state(state, Fetched(graph=demo_graph(rate=80.0)), "http://c", NOW + 2)
    els2, *_ = ov.render(state2, None, None)
    pos1 = {e["data"]["id"]: e.get("position") for e in els1}
    pos2 = {e["data"]["id"]: e.get("position") for e in els2}
    assert pos1 == pos2
    down = next_state(state2, Fetched(error="refused", unreachable=True), "http://c", NOW + 4)
    els3, sheet3, _d, info3, _p, wrap3, _n = ov.render(down, None, None)
    assert wrap3 == "graph-wrap stale" and "stale since" in info3
    assert els3 == els2  # the last graph stays on screen
    assert len(sheet3) == len(sheet1) + 1


def test_overview_waits_for_the_collector_before_first_graph(dash_app: Dash) -> None:
    ov = page(dash_app, "overview")
    els, _s, _d, _i, placeholder, _w, _n = ov.render(None, None, None)
    assert els == [] and placeholder == {"display": "flex"}


def test_fit_happens_on_first_elements_and_on_request_only(dash_app: Dash) -> None:
    ov = page(dash_app, "overview")
    state = _state(demo_graph())
    # (The elements themselves are drawn in the browser: graph_outputs gives what surrounds
    # them, the layout and the fit request done last.)
    first = ov.graph_outputs(state, ov.initial_view(), None, None)
    assert first[-2]["fit"] is True and first[-1] == 0
    again = ov.graph_outputs(state, ov.initial_view(), None, 0)
    assert again[-2] is no_update  # a plain refresh keeps the user's zoom
    view = {**ov.initial_view(), "fit": 1}
    asked = ov.graph_outputs(state, view, None, 0)
    assert asked[-2]["fitRequest"] == 1
    assert ov.graph_outputs(None, view, None, 0) == (no_update,) * len(asked)


def test_tapping_selects_and_folds() -> None:
    view = E.on_tap(None, {"id": "s:cart", "kind": "service"}, None, "tapNodeData")
    assert view["selected"] == "s:cart"
    view = E.on_tap(view, {"id": "g:team:x", "kind": "collapsed", "group": "team:x"}, None,
                     "tapNodeData")
    assert view["expanded"] == ["team:x"]
    view = E.on_tap(view, {"id": "g:team:x", "kind": "group", "group": "team:x"}, None,
                     "tapNodeData")
    assert view["expanded"] == []
    view = E.on_tap(view, None, {"id": 'e:["a", "b"]'}, "tapEdgeData")
    assert view["selected"] == 'e:["a", "b"]'


def test_a_focused_view_survives_refreshes_in_its_own_layout(dash_app: Dash) -> None:
    # The search itself answers in the browser (assets/search.js, covered by the browser
    # tests); a refresh then renders the focus here, with the caller left, the callee right.
    ov = page(dash_app, "overview")
    g = big_graph(1238)
    view = {**ov.initial_view(), "focus": "svc-0042", "selected": "s:svc-0042"}
    els, _s, _d, info, _p, _w, _n = ov.render(_state(g), view, None)
    nodes = {e["data"]["name"]: e for e in els if e["data"].get("name")}
    assert set(nodes) == {"svc-0041", "svc-0042", "svc-0043"}
    assert nodes["svc-0041"]["position"]["x"] < nodes["svc-0042"]["position"]["x"] \
        < nodes["svc-0043"]["position"]["x"]
    assert "picked" in nodes["svc-0042"]["classes"].split()
    assert "showing svc-0042 and its neighbours" in info


def test_large_graph_renders_folded(dash_app: Dash) -> None:
    ov = page(dash_app, "overview")
    els, _s, _d, info, _p, _w, note = ov.render(_state(big_graph(1238)), None, None)
    assert "teams folded" in info
    assert len([e for e in els if "source" not in e["data"]]) <= 32


def test_banners_callback_content(dash_app: Dash) -> None:
    inc = {
        "id": "i1", "status": "open", "started_at": NOW - 10, "confidence": 0.9,
        "root_cause": {"service": "payment", "team": "payments", "kind": "errors",
                       "evidence": {"summary": "s"}},
        "impacted": [{"service": "checkout", "team": "orders"}],
        "page": {"team": "payments", "on_call": "Dana", "channel": "#pay",
                 "runbook": "javascript:alert(1)"},
        "version_change": None,
    }
    state = _state(demo_graph(failing="payment"), incidents=[inc])
    collector, banner, status = app_module.render_banners(state, NOW + 1)
    assert collector is None and status.startswith("updated")
    assert "Dana" in text(banner) and "javascript:alert(1)" not in hrefs(banner)
    assert app_module.highlight_for(state, "i1") == {"root": "payment", "impacted": ["checkout"]}
    assert app_module.pause(["pause"]) is True and app_module.pause([]) is False


def test_service_page_builders(dash_app: Dash) -> None:
    svc_page = page(dash_app, "service")
    svc = {
        "name": EVIL, "kind": "service", "team": None, "health": "failing", "rate_rps": 3.0,
        "error_ratio": 0.25, "p50_ms": 5, "p95_ms": 50, "p99_ms": 90, "up": True,
        "series": [{"t": NOW - 60 + i, "rate_rps": 3.0, "error_ratio": 0.25, "p95_ms": 50}
                   for i in range(60)],
        "callers": [{"service": "checkout", "rate_rps": 3.0, "error_ratio": 0.25,
                     "p95_ms": 50, "health": "degraded"}],
        "callees": [],
        "versions": [{"version": "1.0", "first_seen": NOW - 300, "last_seen": NOW - 30},
                     {"version": EVIL, "first_seen": NOW - 30, "last_seen": NOW}],
        "owner": None,
    }
    body = svc_page.service_body(svc, NOW)
    t = text(body)
    assert "orphan" in t and "checkout" in t and EVIL in t
    assert "/services/checkout" in hrefs(body)
    assert "Img" not in {type(c).__name__ for c in components(body)}
    fig = figures.service_figure(svc)
    assert fig.layout.uirevision == EVIL
    assert len(fig.data) == 3
    deploys = [a.text for a in fig.layout.annotations if a.text.startswith("deploy")]
    assert deploys == ["deploy &lt;img src=x onerror=alert(1)&gt;"]
    # One marker per panel, only for the deploy inside the charted window.
    assert {s.x0 for s in fig.layout.shapes} == {(NOW - 30) * 1000}
    assert len(fig.layout.shapes) == 3


def test_team_and_teams_pages_builders(dash_app: Dash) -> None:
    teams = page(dash_app, "teams")
    cards = teams.teams_list({
        "teams": [{"name": "web", "display_name": "Web Storefront", "on_call": "Ada",
                   "channel": "#web", "services": ["frontend", EVIL],
                   "runbook": "javascript:alert(1)"}],
        "orphans": ["quote"],
        "catalog": {"path": "catalog-info.yaml", "errors": [
            {"file": "catalog-info.yaml", "document": 3, "line": 40, "field": "metadata.name",
             "message": "has no metadata.name"}]},
    })
    t = text(cards)
    assert "Web Storefront" in t and EVIL in t and "quote" in t
    assert "catalog-info.yaml:40 (document 3) metadata.name: has no metadata.name" in t
    assert not any(h.startswith("javascript") for h in hrefs(cards))
    team = page(dash_app, "team")
    body = team.team_body({
        "name": "orders", "display_name": "Orders", "on_call": "Olu", "channel": "#orders",
        "runbook": "https://r.example/orders", "email": "o@example.com",
        "services": [{"name": "cart", "health": "healthy", "source": "catalog"}],
        "edges_out": [{"source": "checkout", "target": "payment", "calls": 5, "rate_rps": 1.0,
                       "error_ratio": 0.0, "p95_ms": 9.0, "health": "healthy"}],
        "edges_in": [],
        "drift": {"undeclared": [{"source": "checkout", "target": "email"}], "unused": []},
    })
    t = text(body)
    assert "Olu" in t and "cart" in t and "Observed but not declared" in t
    assert "https://r.example/orders" in hrefs(body)


def test_demo_fault_body(dash_app: Dash) -> None:
    demo = page(dash_app, "demo")
    assert demo.fault_body(0.3, 200, ["down"], " 2.0-bad ") == {
        "error_rate": 0.3, "latency_ms": 200, "down": True, "version": "2.0-bad"}
    assert demo.fault_body(None, None, [], "") == {
        "error_rate": 0.0, "latency_ms": 0, "down": False}
    assert demo.fault_body(None, None, [], "", 2)["cpu_hog"] == 2
    cards = demo.demo_cards({"services": [{"name": "cart", "state": "up", "fault": {}}],
                             "virtual": ["redis"]})
    assert "cart" in text(cards) and "redis" in text(cards)


def test_highlight_lasts_while_its_incident_is_open(dash_app: Dash) -> None:
    ov = page(dash_app, "overview")
    inc = {"id": "i1", "status": "open", "root_cause": {"service": "payment"},
           "impacted": [{"service": "checkout"}]}
    hl = {"root": "payment", "impacted": ["checkout"]}
    lit, *_ = ov.render(_state(demo_graph(), incidents=[inc]), None, hl)
    assert "root-cause" in {c for e in lit for c in e["classes"].split()}
    over, *_ = ov.render(_state(demo_graph(), incidents=[]), None, hl)
    assert "root-cause" not in {c for e in over for c in e["classes"].split()}


def test_root_cause_in_a_folded_team_is_shown(dash_app: Dash) -> None:
    ov = page(dash_app, "overview")
    g = big_graph(400, teams=8)
    inc = {"id": "i1", "status": "open", "root_cause": {"service": "svc-0003"}, "impacted": []}
    els, *_ = ov.render(_state(g, incidents=[inc]), None, {"root": "svc-0003", "impacted": []})
    by_id = {e["data"]["id"]: e for e in els}
    assert "root-cause" in by_id["s:svc-0003"]["classes"].split()
    assert by_id["g:team:team-2"]["data"]["kind"] == "collapsed"


def _served_layout(dash_app: Dash, referer: str | None) -> dict[str, Any]:
    headers = {"Referer": referer} if referer else {}
    r = dash_app.server.test_client().get("/_dash-layout", headers=headers)
    assert r.status_code == 200
    return dict(r.get_json())


def _component(tree: Any, cid: str) -> dict[str, Any] | None:
    """The component with id ``cid`` in a served layout (JSON), depth first."""
    if isinstance(tree, dict):
        props = tree.get("props")
        if isinstance(props, dict):
            if props.get("id") == cid:
                return tree
            return _component(props.get("children"), cid)
        return None
    for child in tree if isinstance(tree, list) else ():
        found = _component(child, cid)
        if found is not None:
            return found
    return None


def test_the_layout_carries_the_page_its_referer_asks_for(dash_app: Dash) -> None:
    # The renderer fetches the layout from the page it shows: that page comes in it, and the
    # Location starts at its address (so Dash's router does not render it again).
    served = _served_layout(dash_app, "http://localhost/services/check%20out?x=1")
    content = _component(served, "_pages_content")
    assert content is not None and content["props"]["children"]
    assert _component(content, "svc-body") is not None
    name = _component(content, "svc-name")
    assert name is not None and name["props"]["data"] == "check out"  # the page unquotes it
    loc = _component(served, "_pages_location")
    assert loc is not None and loc["props"]["pathname"] == "/services/check%20out"
    assert loc["props"]["search"] == "?x=1"
    assert loc["props"]["href"] == "http://localhost/services/check%20out?x=1"
    store = _component(served, "_pages_store")
    assert store is not None and store["props"]["data"] == {"title": "Conway · service"}
    teams = _served_layout(dash_app, "http://localhost/teams")
    assert _component(_component(teams, "_pages_content"), "teams-list") is not None


@pytest.mark.parametrize("referer", [None, "http://elsewhere.example/services/checkout",
                                     "http://localhost/no/such/page", "javascript:alert(1)"])
def test_without_a_usable_referer_the_router_renders_the_page(dash_app: Dash,
                                                              referer: str | None) -> None:
    served = _served_layout(dash_app, referer)
    content = _component(served, "_pages_content")
    assert content is not None and not content["props"].get("children")
    loc = _component(served, "_pages_location")
    assert loc is not None and loc["props"].get("pathname") is None
