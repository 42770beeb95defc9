"""Unicode bidi controls in telemetry and catalog text are drawn escaped ("live.exe-rtl").

A service named ``"invoice\\u202efdp.exe"`` (a real U+202E, RIGHT-TO-LEFT OVERRIDE) would be
drawn as "invoiceexe.pdf" and reorder the incident banner around it. Every builder passes such
text through ``dashboard.text.display_text``, which shows each control as visible ``\\u202e``;
ids, hrefs and stores keep the raw name, so links and look-ups still find the service.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from dash import Dash
from dash.development.base_component import Component
from dash_graphs import big_graph, demo_graph, node
from dash_tree import components, hrefs, text

from dashboard import app as app_module
from dashboard import elements as E
from dashboard import figures, views
from dashboard import positions as P
from dashboard.text import BIDI_CONTROLS, display_text, plotly_text

NOW = 1_700_000_000.0
RLO = "\u202e"
EVIL = f"invoice{RLO}fdp.exe"  # drawn as "invoiceexe.pdf" if the control is obeyed
SHOWN = "invoice\\u202efdp.exe"
RAW_PROPS = ("id", "href", "data")  # where the raw name must stay (look-ups, links)


def drawn_strings(tree: Any) -> list[str]:
    """Every string a browser draws from a component tree: text children and other string
    props (``title`` tooltips, labels...), but not ids, hrefs or stored data."""
    out = [text(tree)]
    for c in components(tree):
        for prop in c._prop_names:
            value = getattr(c, prop, None)
            if prop not in RAW_PROPS and prop != "children" and isinstance(value, str):
                out.append(value)
    return out


def assert_escaped(tree: Any, *expected: str) -> None:
    drawn = "\n".join(drawn_strings(tree))
    assert not BIDI_CONTROLS & set(drawn), repr(drawn)
    for item in expected:
        assert item in drawn, (item, drawn)


# -- the helper ---------------------------------------------------------------------------


def test_display_text_shows_every_bidi_control_escaped() -> None:
    assert len(BIDI_CONTROLS) == 12
    for ch in BIDI_CONTROLS:
        shown = display_text(f"a{ch}b")
        assert shown == f"a\\u{ord(ch):04x}b"
        assert not BIDI_CONTROLS & set(shown)
    assert display_text(EVIL) == SHOWN
    assert (display_text("\u2066x\u2069 \u200e\u200f\u061c")
            == "\\u2066x\\u2069 \\u200e\\u200f\\u061c")


def test_display_text_leaves_other_text_alone() -> None:
    for plain in ("checkout", "Équipe paiement", "שירות", "خدمة", "支払い", "1.5.0-bad", ""):
        assert display_text(plain) == plain
    assert display_text(None) == "None" and display_text(42) == "42"


def test_plotly_text_escapes_html_and_bidi() -> None:
    assert plotly_text(f"<b>{EVIL}</b>") == f"&lt;b&gt;{SHOWN}&lt;/b&gt;"


# -- the incident banner ------------------------------------------------------------------


def bidi_incident() -> dict[str, Any]:
    return {
        "id": "inc-1",
        "status": "open",
        "started_at": NOW - 125,
        "confidence": 0.9,
        "root_cause": {"service": EVIL, "team": f"team{RLO}x", "kind": f"errors{RLO}",
                       "evidence": {"summary": f"{EVIL} fails 48% of its calls"}},
        "impacted": [{"service": f"check{RLO}out", "team": f"orders{RLO}",
                      "summary": f"tooltip {RLO}x"}],
        "page": {"team": f"team{RLO}x", "on_call": f"Dana{RLO}", "channel": f"#pay{RLO}",
                 "runbook": "https://runbooks.example/payments"},
        "version_change": {"service": EVIL, "from": "1.4.0", "to": f"1.5.0{RLO}-bad",
                           "at": NOW - 130},
    }


def test_incident_banner_shows_bidi_controls_escaped() -> None:
    banner = views.page_banner([bidi_incident()], NOW)
    assert_escaped(banner, SHOWN, "team\\u202ex", "Dana\\u202e", "#pay\\u202e",
                   "1.5.0\\u202e-bad", "check\\u202eout", "orders\\u202e", "errors\\u202e",
                   "tooltip \\u202ex", f"Version change on {SHOWN}")
    # The raw name stays where it is looked up: the links' paths.
    [button] = [c for c in components(banner) if type(c).__name__ == "Button"]
    assert button.id["index"] == "inc-1" and button.children == SHOWN
    assert {"/services/check%E2%80%AEout", "/teams/team%E2%80%AEx"} <= set(hrefs(banner))


def test_banner_with_team_display_names_escapes_them() -> None:
    banner = views.page_banner([bidi_incident()], NOW, {f"team{RLO}x": f"Pay{RLO}ments"})
    assert_escaped(banner, "Pay\\u202ements")


# -- the graph, the details panel ---------------------------------------------------------


def bidi_graph() -> dict[str, Any]:
    graph = demo_graph()
    graph["nodes"].append(node(EVIL, f"team{RLO}x", health="failing"))
    graph["edges"].append({"source": "checkout", "target": EVIL, "rate_rps": 1.0,
                           "error_ratio": 0.5, "p95_ms": 10.0, "health": "failing"})
    return graph


def test_graph_labels_show_bidi_controls_escaped_and_ids_stay_raw() -> None:
    graph = bidi_graph()
    els = {el["data"]["id"]: el for el in E.build_elements(
        graph, P.assign(None, graph["nodes"]), team_names={f"team{RLO}x": f"Pay{RLO}ments"})}
    svc = els[E.node_el_id(EVIL)]
    assert svc["data"]["name"] == EVIL
    assert svc["data"]["label"].startswith(SHOWN)
    assert els["g:team:" + f"team{RLO}x"]["data"]["label"] == "Pay\\u202ements"
    for el in els.values():
        assert not BIDI_CONTROLS & set(str(el["data"].get("label", ""))), el


def test_folded_team_labels_are_escaped() -> None:
    graph = big_graph(20, teams=2)
    for n in graph["nodes"]:
        n["team"] = f"{n['team']}{RLO}"
    els = E.build_elements(graph, P.assign(None, graph["nodes"]), collapse_threshold=5)
    labels = [el["data"]["label"] for el in els if el["data"].get("kind") == "collapsed"]
    assert labels and all(label.startswith("team-") and "\\u202e" in label for label in labels)
    assert not any(BIDI_CONTROLS & set(label) for label in labels)


def test_team_map_labels_are_escaped() -> None:
    els = E.build_teammap_elements({
        "nodes": [{"id": f"web{RLO}", "display_name": f"Web{RLO}", "services": 2,
                   "health": "healthy"}],
        "edges": [],
    })
    assert els[0]["data"]["label"].startswith("Web\\u202e\n")
    assert els[0]["data"]["team"] == f"web{RLO}"


def test_details_panel_shows_bidi_controls_escaped() -> None:
    graph = bidi_graph()
    assert_escaped(views.details_panel(graph, E.node_el_id(EVIL)), SHOWN, "team\\u202ex")
    assert_escaped(views.details_panel(graph, E.edge_el_id("checkout", EVIL)), SHOWN)
    assert_escaped(views.details_panel(graph, E.node_el_id(f"gone{RLO}")), "gone\\u202e")
    assert_escaped(views.details_panel(graph, "g:team:" + f"team{RLO}x"), "team\\u202ex",
                   f"failing: {SHOWN}")


def test_owner_card_and_error_box_escape_bidi_controls() -> None:
    assert_escaped(views.owner_card({"team": f"t{RLO}", "display_name": f"T{RLO}",
                                     "on_call": f"o{RLO}", "channel": f"c{RLO}",
                                     "source": f"s{RLO}"}),
                   "T\\u202e", "o\\u202e", "c\\u202e", "s\\u202e")
    assert_escaped(views.error_box(f"unknown service {EVIL}"), SHOWN)


# -- pages --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dash_app() -> Dash:
    return app_module.create_app(app_module.Settings(collector_url="http://127.0.0.1:9"))


def page(dash_app: Dash, name: str) -> ModuleType:
    return importlib.import_module(f"dashboard.pages.{name}")


def test_service_page_shows_bidi_controls_escaped(dash_app: Dash) -> None:
    svc_page = page(dash_app, "service")
    header = svc_page.layout(name="invoice%E2%80%AEfdp.exe")
    assert_escaped(header, SHOWN)
    assert any(getattr(c, "data", None) == EVIL for c in components(header))  # raw, for the API
    svc = {
        "name": EVIL, "kind": f"service{RLO}", "team": f"team{RLO}x", "health": "failing",
        "series": [{"t": NOW - 60 + i, "rate_rps": 1.0} for i in range(60)],
        "callers": [{"service": f"check{RLO}out", "health": "healthy"}], "callees": [],
        "versions": [{"version": f"1.5.0{RLO}-bad", "first_seen": NOW - 30, "last_seen": NOW}],
        "owner": {"team": f"team{RLO}x", "on_call": f"Dana{RLO}", "channel": "#c",
                  "source": "catalog"},
    }
    body = svc_page.service_body(svc, NOW)
    assert_escaped(body, "service\\u202e", "team\\u202ex", "check\\u202eout",
                   "1.5.0\\u202e-bad", "Dana\\u202e")
    deploys = [a.text for a in figures.service_figure(svc).layout.annotations
               if a.text.startswith("deploy")]
    assert deploys == ["deploy 1.5.0\\u202e-bad"]


def test_team_pages_show_bidi_controls_escaped(dash_app: Dash) -> None:
    team = page(dash_app, "team")
    assert_escaped(team.layout(name="team%E2%80%AEx"), "team\\u202ex")
    body = team.team_body({
        "name": f"team{RLO}x", "display_name": f"Pay{RLO}ments", "on_call": f"Olu{RLO}",
        "channel": f"#o{RLO}", "email": f"o{RLO}@example.com",
        "services": [{"name": EVIL, "health": "healthy", "source": f"catalog{RLO}"}],
        "edges_out": [{"source": EVIL, "target": "payment", "health": "healthy"}],
        "edges_in": [],
        "drift": {"undeclared": [{"source": EVIL, "target": "email"}], "unused": []},
    })
    assert_escaped(body, "Pay\\u202ements", "Olu\\u202e", "#o\\u202e", SHOWN, "catalog\\u202e")
    teams = page(dash_app, "teams")
    cards = teams.teams_list({
        "teams": [{"name": f"team{RLO}x", "display_name": f"Pay{RLO}ments",
                   "on_call": f"Olu{RLO}", "channel": f"#o{RLO}", "services": [EVIL]}],
        "orphans": [f"quote{RLO}"],
        "catalog": {"path": "catalog-info.yaml", "errors": [
            {"file": "catalog-info.yaml", "line": 3, "field": "spec.owner",
             "message": f"{EVIL} is not an entity reference"}]},
    })
    assert_escaped(cards, "Pay\\u202ements", SHOWN, "quote\\u202e",
                   f"spec.owner: {SHOWN} is not an entity reference")


def test_no_builder_output_carries_a_raw_control_in_drawn_text() -> None:
    """The helper's own check: a tree with raw controls only in ids/hrefs passes."""
    tree = views.service_link(EVIL)
    assert isinstance(tree, Component)
    assert tree.children == SHOWN and tree.href.endswith("%E2%80%AEfdp.exe")
    assert_escaped(tree, SHOWN)
