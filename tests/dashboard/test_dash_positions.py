from __future__ import annotations

from dash_graphs import big_graph, demo_graph, node

from dashboard import positions as P


def _all_positions(pos: P.Positions, graph: dict) -> dict[str, dict[str, float]]:
    orphans = sum(1 for n in graph["nodes"] if n["kind"] != "virtual" and not n.get("team"))
    out = {}
    for n in graph["nodes"]:
        place = P.member_position(pos, P.group_of(n, orphans), n["id"])
        assert place is not None, n["id"]
        out[n["id"]] = place
    return out


def test_same_graph_with_new_numbers_keeps_every_position() -> None:
    first = demo_graph(rate=1.0)
    pos = P.assign(None, first["nodes"])
    before = _all_positions(pos, first)
    later = demo_graph(rate=250.0, failing="payment")
    pos2 = P.assign(pos, later["nodes"])
    assert _all_positions(pos2, later) == before


def test_layout_does_not_depend_on_the_order_nodes_arrive_in() -> None:
    g = demo_graph()
    a = P.assign(None, g["nodes"])
    b = P.assign(None, list(reversed(g["nodes"])))
    assert _all_positions(a, g) == _all_positions(b, g)


def test_a_new_service_takes_a_free_slot_and_moves_nobody() -> None:
    g = demo_graph()
    pos = P.assign(None, g["nodes"])
    before = _all_positions(pos, g)
    g["nodes"].append(node("aaa-new-web", "web"))
    pos2 = P.assign(pos, g["nodes"])
    after = _all_positions(pos2, g)
    new = after.pop("aaa-new-web")
    assert after == before
    assert new not in before.values()


def test_a_new_team_is_appended_without_moving_other_teams() -> None:
    g = demo_graph()
    pos = P.assign(None, g["nodes"])
    before = _all_positions(pos, g)
    g["nodes"].append(node("search", "aardvarks"))  # sorts first, still goes last
    after = _all_positions(P.assign(pos, g["nodes"]), g)
    after.pop("search")
    assert after == before


def test_a_team_that_outgrows_its_box_moves_alone() -> None:
    g = demo_graph()
    pos = P.assign(None, g["nodes"])
    before = _all_positions(pos, g)
    for i in range(10):
        g["nodes"].append(node(f"web-{i}", "web"))
    after = _all_positions(P.assign(pos, g["nodes"]), g)
    moved = {k for k in before if before[k] != after[k]}
    assert moved == {"frontend", "ad"}


def test_services_of_a_team_are_inside_that_teams_box_and_boxes_do_not_overlap() -> None:
    g = big_graph(300, teams=7)
    pos = P.assign(None, g["nodes"])
    boxes = []
    for key, box in pos["groups"].items():
        w, h = P.box_size(box)
        boxes.append((key, box["x"], box["y"], box["x"] + w, box["y"] + h))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2], (a, b)
    for n in g["nodes"]:
        group = P.group_of(n, 0)
        place = P.member_position(pos, group, n["id"])
        box = pos["groups"][group]
        assert place is not None
        w, h = P.box_size(box)
        assert box["x"] <= place["x"] <= box["x"] + w
        assert box["y"] <= place["y"] <= box["y"] + h


def test_many_orphans_are_split_into_bounded_chunks() -> None:
    g = big_graph(1238)
    pos = P.assign(None, g["nodes"])
    assert len(pos["groups"]) <= P.ORPHAN_BUCKETS
    sizes = [len(m) for m in pos["members"].values()]
    assert sum(sizes) == 1238
    assert max(sizes) < 1238 / 10
    assert P.assign(None, g["nodes"]) == pos


def test_remembered_slots_are_bounded() -> None:
    pos = P.assign(None, big_graph(P.MAX_REMEMBERED // 2 + 10)["nodes"])
    assert P.assign(pos, big_graph(P.MAX_REMEMBERED // 2 + 10)["nodes"]) == pos
    renamed = [dict(n, id=n["id"] + "-v2") for n in big_graph(P.MAX_REMEMBERED // 2 + 10)["nodes"]]
    pos = P.assign(pos, renamed)
    assert pos["resets"] == 1
    assert sum(len(m) for m in pos["members"].values()) == len(renamed)
