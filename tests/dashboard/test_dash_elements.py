from __future__ import annotations

from typing import Any

from dash_graphs import big_graph, demo_graph, node, tangled_graph

from dashboard import elements as E
from dashboard import positions as P


def _by_id(elements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {el["data"]["id"]: el for el in elements}


def _build(graph: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    return E.build_elements(graph, P.assign(None, graph["nodes"]), **kw)


def test_every_service_is_drawn_inside_its_teams_box() -> None:
    els = _by_id(_build(demo_graph()))
    assert els["s:checkout"]["data"]["parent"] == "g:team:orders"
    assert els["s:email"]["data"]["parent"] == "g:team:comms"
    assert "team" in els["g:team:orders"]["classes"].split()
    # The orphan sits in the dashed "(no team)" box and is marked itself.
    assert els["s:quote"]["data"]["parent"] == "g:" + P.ORPHAN_GROUP
    assert "orphan" in els["s:quote"]["classes"].split()
    assert "orphans" in els["g:" + P.ORPHAN_GROUP]["classes"].split()


def test_virtual_nodes_have_their_own_kind_and_no_team_box() -> None:
    els = _by_id(_build(demo_graph()))
    assert {"virtual", "database"} <= set(els["s:orders"]["classes"].split())
    assert {"virtual", "database"} <= set(els["s:redis"]["classes"].split())
    assert {"virtual", "user"} <= set(els["s:user"]["classes"].split())
    assert "parent" not in els["s:user"]["data"]


def test_node_colour_follows_health_and_edges_follow_rate_and_errors() -> None:
    g = demo_graph(failing="payment")
    g["edges"].append({"source": "payment", "target": "currency", "rate_rps": 50.0,
                       "error_ratio": 0.5})
    els = _by_id(_build(g))
    assert els["s:payment"]["data"]["color"] == E.HEALTH_COLORS["failing"]
    assert els["s:cart"]["data"]["color"] == E.HEALTH_COLORS["healthy"]
    busy = els[E.edge_el_id("payment", "currency")]["data"]
    quiet = els[E.edge_el_id("checkout", "cart")]["data"]
    assert busy["color"] == E.EDGE_BAD and quiet["color"] == E.EDGE_OK
    assert busy["width"] > quiet["width"]


def test_an_edge_width_depends_on_its_own_rate_only() -> None:
    # A busier call elsewhere (or opening a team, which splits the largest aggregate) must not
    # change every other edge: Cytoscape restyles each edge whose data changed.
    g = demo_graph()
    before = {k: v["data"]["width"] for k, v in _by_id(_build(g)).items() if "width" in v["data"]}
    g["edges"].append({"source": "payment", "target": "currency", "rate_rps": 5000.0,
                       "error_ratio": 0.0})
    after = {k: v["data"]["width"] for k, v in _by_id(_build(g)).items() if "width" in v["data"]}
    assert all(after[k] == w for k, w in before.items())
    assert after[E.edge_el_id("payment", "currency")] == 8.0
    assert [E.edge_width(r) for r in (0.0, 1.0, 10.0, 100.0, 1e6)] == [1.5, 2.0, 4.0, 6.0, 8.0]


def test_labels_carry_rate_errors_and_p95() -> None:
    els = _by_id(_build(demo_graph(rate=12.5)))
    label = els["s:cart"]["data"]["label"]
    assert label.startswith("cart\n") and "12.5 rps" in label and "p95 20 ms" in label
    assert "12.5 rps" in els[E.edge_el_id("checkout", "cart")]["data"]["label"]


def test_positions_do_not_change_when_numbers_do() -> None:
    g1 = demo_graph(rate=1.0)
    pos = P.assign(None, g1["nodes"])
    a = {k: v.get("position") for k, v in _by_id(E.build_elements(g1, pos)).items()}
    g2 = demo_graph(rate=99.0, failing="cart")
    pos2 = P.assign(pos, g2["nodes"])
    b = {k: v.get("position") for k, v in _by_id(E.build_elements(g2, pos2)).items()}
    assert a == b


def test_above_the_threshold_teams_collapse_into_one_node_each() -> None:
    g = big_graph(400, teams=8)
    g["nodes"][3]["health"] = "failing"
    els = _build(g)
    nodes = [e for e in els if "source" not in e["data"]]
    assert len(nodes) == 8
    team3 = _by_id(els)["g:team:team-3"]
    assert team3["data"]["kind"] == "collapsed"
    assert team3["data"]["health"] == "failing"
    assert "50 services" in team3["data"]["label"] and "1 failing" in team3["data"]["label"]
    edges = [e for e in els if "source" in e["data"]]
    assert all(e["data"]["source"].startswith("g:") for e in edges)
    assert len(edges) <= 8 * 7


def test_an_expanded_team_shows_its_services_and_others_stay_folded() -> None:
    g = big_graph(400, teams=8)
    els = _by_id(_build(g, expanded=["team:team-1"]))
    assert els["s:svc-0001"]["data"]["parent"] == "g:team:team-1"
    assert els["g:team:team-2"]["data"]["kind"] == "collapsed"
    assert "s:svc-0002" not in els


def test_search_focus_shows_the_service_and_its_neighbours_only() -> None:
    g = big_graph(1238)
    els = _build(g, focus="svc-0100")
    names = {e["data"]["name"] for e in els if e["data"].get("name")}
    assert names == {"svc-0099", "svc-0100", "svc-0101"}


def test_selection_and_blast_radius_are_marked_on_refresh() -> None:
    els = _by_id(
        _build(
            demo_graph(failing="payment"),
            selected="s:cart",
            highlight={"root": "payment", "impacted": ["checkout", "frontend"]},
        )
    )
    assert "picked" in els["s:cart"]["classes"].split()
    assert "root-cause" in els["s:payment"]["classes"].split()
    assert "impacted" in els["s:checkout"]["classes"].split()
    assert "faded" in els["s:email"]["classes"].split()
    assert "blast" in els[E.edge_el_id("checkout", "payment")]["classes"].split()


def test_stale_stylesheet_greys_everything() -> None:
    fresh = E.stylesheet(stale=False)
    stale = E.stylesheet(stale=True)
    assert len(stale) == len(fresh) + 1
    assert stale[-1]["selector"] == "node, edge" and stale[-1]["style"]["opacity"] < 1


def test_hostile_names_stay_plain_data() -> None:
    evil = "<img src=x onerror=alert(1)>"
    g = demo_graph()
    g["nodes"].append(node(evil, "web"))
    els = _by_id(_build(g))
    el = els[E.node_el_id(evil)]
    assert el["data"]["name"] == evil
    assert el["data"]["label"].startswith(evil)
    assert E.parse_el_id(E.node_el_id(evil)) == ("service", evil)


def test_teammap_places_teams_deterministically() -> None:
    tm: dict[str, Any] = {
        "nodes": [
            {"id": "web", "display_name": "Web", "health": "healthy", "services": ["a"]},
            {"id": "orders", "display_name": "Orders", "health": "failing", "services": ["b"]},
        ],
        "edges": [{"source": "web", "target": "orders", "rate_rps": 3.0, "error_ratio": 0.2,
                   "health": "failing"}],
    }
    a = E.build_teammap_elements(tm)
    b = E.build_teammap_elements({"nodes": list(reversed(tm["nodes"])), "edges": tm["edges"]})
    assert a == b
    by = _by_id(a)
    assert by["t:orders"]["data"]["color"] == E.HEALTH_COLORS["failing"]
    assert by['te:["web", "orders"]']["data"]["color"] == E.HEALTH_COLORS["failing"]


def test_folded_teams_draw_their_busiest_calls_and_every_failing_one() -> None:
    g = tangled_graph()
    pos = P.assign(None, g["nodes"])
    els, hidden = E.build_view(g, pos)
    by_id = _by_id(els)
    folded = {k for k, el in by_id.items() if el["data"].get("kind") == "collapsed"}
    between = [el for el in els if el["data"].get("source") in folded
               and el["data"].get("target") in folded]
    assert len(folded) == 50 and hidden > 0
    assert len(between) == E.FOLDED_EDGE_LIMIT  # the failing one, and the busiest
    failing = [el for el in between if el["data"]["color"] == E.EDGE_BAD]
    assert [(el["data"]["source"], el["data"]["target"]) for el in failing] == [
        ("g:team:team-49", "g:team:team-00")]
    team = {n["id"]: f"g:team:{n['team']}" for n in g["nodes"]}
    rates: dict[tuple[str, str], float] = {}
    for e in g["edges"]:
        pair = (team[e["source"]], team[e["target"]])
        if pair[0] != pair[1]:
            rates[pair] = rates.get(pair, 0.0) + e["rate_rps"]
    busiest = sorted(rates, key=lambda p: -rates[p])
    drawn = {(el["data"]["source"], el["data"]["target"]) for el in between}
    assert set(busiest[:250]) <= drawn and not set(busiest[-100:]) & drawn
    assert hidden == len(rates) - E.FOLDED_EDGE_LIMIT
    # A call in the blast radius is drawn whatever its rate (one alone between two teams).
    calls: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in g["edges"]:
        calls.setdefault((team[e["source"]], team[e["target"]]), []).append(e)
    quiet = next(c[0] for p in reversed(busiest) if len(c := calls[p]) == 1)
    assert E.edge_el_id(quiet["source"], quiet["target"]) not in by_id
    hl = {"root": quiet["target"], "impacted": [quiet["source"]]}
    lit, _ = E.build_view(g, pos, highlight=hl)
    assert "blast" in _by_id(lit)[E.edge_el_id(quiet["source"], quiet["target"])]["classes"]
    # An opened team draws all its own calls.
    opened, _ = E.build_view(g, pos, expanded=["team:team-07"])
    mine = {(e["source"], e["target"]) for e in g["edges"]
            if "g:team:team-07" in (team[e["source"]], team[e["target"]])}
    shown = {(el["data"]["source"], el["data"]["target"]) for el in opened
             if "source" in el["data"]}
    assert len(mine) > 100
    for src, dst in mine:
        assert (E.node_el_id(src) if team[src] == "g:team:team-07" else team[src],
                E.node_el_id(dst) if team[dst] == "g:team:team-07" else team[dst]) in shown
