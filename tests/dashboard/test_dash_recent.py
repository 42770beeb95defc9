"""The recent states' bounds: a count, and the nodes and edges their graphs hold."""

from __future__ import annotations

from typing import Any

from dashboard.recent import RecentStates


def _state(graph: dict[str, Any] | None) -> dict[str, Any]:
    return {"graph": graph, "reachable": graph is not None}


def _graph(nodes: int, edges: int) -> dict[str, Any]:
    return {"nodes": [{"id": f"n{i}"} for i in range(nodes)],
            "edges": [{"source": "n0", "target": "n1"}] * edges}


def test_states_are_bounded_by_count_and_by_the_graphs_they_hold() -> None:
    recent = RecentStates(size=5, max_elements=1_000)
    keys = [recent.put(_state(None)) for _ in range(7)]
    assert recent.held() == (5, 0) and recent.get(keys[0]) is None and recent.get(keys[-1])
    big = [recent.put(_state(_graph(300, 100))) for _ in range(3)]
    # 400 elements each: two fit in 1,000; the third pushes the oldest out.
    assert recent.held() == (2, 800) and recent.get(big[0]) is None and recent.get(big[2])
    shared = _graph(100, 0)  # one read serving several states counts once
    for _ in range(4):
        recent.put(_state(shared))
    assert recent.held() == (5, 500)
    huge = recent.put(_state(_graph(5_000, 0)))  # the newest is kept whatever its size
    assert recent.held() == (1, 5_000) and recent.get(huge) is not None
    assert recent.evicted == 14
