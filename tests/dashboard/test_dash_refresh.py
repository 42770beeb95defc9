"""The refresh callback against a real collector: the browser's state store holds all but the
graph, which goes down once per new snapshot as the graph store (``state.wire_graph``) and is
kept in the dashboard's recent states; positions stay put from one refresh to the next, the
graph is not sent off the overview, and when the collector stops answering the last graph is
kept (stale) without being sent again."""

from __future__ import annotations

import time
from typing import Any

import httpx
from dash import no_update
from dash_procs import StartCollector
from dash_traffic import Shop
from test_dash_browser import until

from dashboard import app as app_module


def test_the_graph_goes_down_once_and_the_state_without_it(
        start_collector: StartCollector) -> None:
    url = start_collector()
    shop = Shop(url)
    for _ in range(5):
        shop.request()
    shop.flush()
    until("the graph", lambda: len(httpx.get(url + "/api/graph", timeout=5)
                                   .json().get("nodes", [])) >= 10)
    app = app_module.create_app(app_module.Settings(collector_url=url))
    with app.server.app_context():
        first, key, _bar, wire = app_module.refresh(0, None, None, None, "/")
        full = app_module.recent_states().get(key)
        assert full is not None and full["graph"]["nodes"]
        assert "graph" not in first and first["positions"] == full["positions"]
        names = [row[0] for row in wire["nodes"]]
        assert names == [n["id"] for n in full["graph"]["nodes"]]
        # Edges name their ends by index into the nodes.
        assert {(names[s], names[t]) for s, t, *_ in wire["edges"]} == {
            (e["source"], e["target"]) for e in full["graph"]["edges"]}

        # New traffic: a new service takes a new slot, the others keep theirs.
        shop.calls["checkout"] = [*shop.calls["checkout"], "loyalty"]
        shop.request()
        shop.flush()
        time.sleep(1.2)  # the collector's next tick publishes it
        second, key2, _bar, wire2 = app_module.refresh(1, None, first, key, "/")
        full2: dict[str, Any] | None = app_module.recent_states().get(key2)
        assert full2 is not None and "loyalty" in {n["id"] for n in full2["graph"]["nodes"]}
        for group, members in first["positions"]["members"].items():
            for name, slot in members.items():
                assert second["positions"]["members"][group][name] == slot
        assert wire2 is not no_update

        # Off the overview the graph store is not sent.
        third, key3, _bar, wire3 = app_module.refresh(2, None, second, key2, "/teams")
        assert wire3 is no_update and third["reachable"] is True

    # The collector stops answering: the last graph is kept, stale, and not sent again.
    app.server.config[app_module.SETTINGS_KEY] = app_module.Settings(
        collector_url="http://127.0.0.1:9")
    with app.server.app_context():
        fourth, key4, _bar, wire4 = app_module.refresh(3, None, third, key3, "/")
        full4 = app_module.recent_states().get(key4)
        assert fourth["reachable"] is False and wire4 is no_update
        assert full4 is not None and full4["graph"] is app_module.recent_states().get(key3)[
            "graph"]
    shop.close()


def test_a_page_and_its_first_refresh_read_the_collector_once(
        start_collector: StartCollector) -> None:
    # The overview's layout and the first refresh ask for the same moment at the same time:
    # one read of the real collector serves both; later, or for another moment, it reads anew.
    import threading

    from dashboard.client import CollectorClient
    from dashboard.state import SharedFetches

    url = start_collector()
    shop = Shop(url)
    shop.request()
    shop.flush()
    shop.close()

    class Counting(CollectorClient):
        graphs = 0

        def graph(self, window_s: float, at: float | None = None) -> dict[str, Any]:
            Counting.graphs += 1
            time.sleep(0.2)  # a large graph takes a while: the second caller arrives meanwhile
            return super().graph(window_s, at=at)

    clock = [100.0]
    shared = SharedFetches(share_s=0.5, clock=lambda: clock[0])
    got: list[Any] = []
    with Counting(url) as client:
        threads = [threading.Thread(target=lambda: got.append(shared.fetch(client, 60.0)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Counting.graphs == 1 and shared.shared == 1
        assert got[0] is got[1] and got[0].error is None and got[0].graph["nodes"]
        assert got[0].compact() is got[1].compact()
        clock[0] += 0.6  # past the sharing window: read again
        assert shared.fetch(client, 60.0) is not got[0] and Counting.graphs == 2
        shared.fetch(client, 30.0)  # another window is another read
        assert Counting.graphs == 3 and shared.shared == 1
