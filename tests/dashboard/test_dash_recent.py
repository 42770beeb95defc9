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


def test_the_dashboard_says_what_its_recent_states_hold_and_dropped_on_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from dashboard import app as app_module

    app = app_module.create_app(app_module.Settings(collector_url="http://127.0.0.1:9"))
    recent = app.server.config[app_module.RECENT_KEY]
    recent.max_elements = 1_000
    for _ in range(4):
        recent.put(_state(_graph(300, 100)))  # 400 each: two fit, two pushed out

    def read() -> dict[str, float]:
        r = app.server.test_client().get("/metrics")
        assert r.status_code == 200 and r.mimetype == "text/plain"
        return {s.name: s.value for f in text_string_to_metric_families(r.get_data(True))
                for s in f.samples}

    got = read()
    assert got["conway_dashboard_recent_states"] == 2
    assert got["conway_dashboard_recent_elements"] == 800
    assert got["conway_dashboard_recent_elements_limit"] == 1_000
    assert got["conway_dashboard_recent_states_limit"] == 128
    assert got["conway_dashboard_recent_evicted_total"] == 2
    assert got["conway_dashboard_shared_fetches_total"] == 0
    assert read() == got  # reading changes nothing
