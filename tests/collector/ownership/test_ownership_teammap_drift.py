"""The team map and catalog drift on hand-built snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from ownership_helpers import docs, snapshot

from collector.model import Snapshot
from collector.ownership.catalog import load_catalog
from collector.ownership.drift import find_drift
from collector.ownership.teammap import EXTERNAL, ORPHANS, team_map
from collector.vocabulary import worst_health

TEAMS = {"web": "web", "api": "core", "db": "core", "auth": "sec", "billing": "core"}


def shop() -> Snapshot:
    snap = snapshot(
        {"user": "virtual", "web": "service", "api": "service", "auth": "service",
         "billing": "service", "db": "virtual", "lonely": "service", "stripe": "virtual"},
        [
            ("user", "web", 100, 0, 10.0),
            ("web", "api", 80, 8, 50.0),
            ("web", "billing", 20, 0, 200.0),
            ("web", "auth", 100, 0, 5.0),
            ("api", "db", 80, 0, 3.0),
            ("api", "lonely", 40, 4, 30.0),
            ("billing", "stripe", 20, 2, 400.0),
        ],
        health={"api": "degraded", "billing": "healthy", "db": "unknown", "lonely": "failing"},
    )
    for node_id, team in TEAMS.items():
        snap.nodes[node_id].team = team
    return snap


def test_team_map_nodes_group_services_orphans_and_external_dependencies() -> None:
    result = team_map(shop(), {"core": "Core Platform"})
    nodes = {n["id"]: n for n in result["nodes"]}
    assert list(nodes) == [EXTERNAL, ORPHANS, "core", "sec", "web"]
    assert nodes["core"]["services"] == ["api", "billing", "db"]
    assert nodes["core"]["display_name"] == "Core Platform"
    assert nodes["web"]["display_name"] == "web"
    assert nodes["core"]["health"] == "degraded"  # the worst known health of its nodes
    assert nodes[ORPHANS]["services"] == ["lonely"]
    assert nodes[EXTERNAL]["services"] == ["stripe"]  # "user" is left out
    assert nodes["core"]["internal"] == {"calls": 80, "errors": 0, "rate_rps": pytest.approx(
        80 / 60), "error_ratio": 0.0}


def test_team_map_edges_sum_calls_and_take_the_largest_p95() -> None:
    edges = {(e["source"], e["target"]): e for e in team_map(shop())["edges"]}
    assert set(edges) == {("web", "core"), ("web", "sec"), ("core", ORPHANS),
                          ("core", EXTERNAL)}
    web_core = edges[("web", "core")]
    assert (web_core["calls"], web_core["errors"]) == (100, 8)
    assert web_core["error_ratio"] == pytest.approx(0.08)
    assert web_core["rate_rps"] == pytest.approx(100 / 60)
    assert web_core["p95_ms"] == 200.0  # max of 50 and 200, not a call-weighted 80
    assert web_core["health"] == "failing"
    assert edges[("core", EXTERNAL)]["p95_ms"] == 400.0


def test_worst_health_ignores_unknown_unless_nothing_is_known() -> None:
    assert worst_health(["unknown", "healthy"]) == "healthy"
    assert worst_health(["degraded", "down", "failing"]) == "down"
    assert worst_health([]) == "unknown"


CATALOG = [
    "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: core}\nspec: {type: team}\n",
    "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: web}\n"
    "spec: {owner: core, dependsOn: [API, 'component:Auth', legacy]}\n",
    "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: API}\n"
    "spec: {owner: core, dependsOn: ['resource:db']}\n",
    "apiVersion: backstage.io/v1alpha1\nkind: Resource\nmetadata: {name: db}\n"
    "spec: {owner: core, type: database}\n",
]


def test_drift_lists_undeclared_calls_and_unused_declarations(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(docs(*CATALOG))
    drift = find_drift(shop(), load_catalog(path))
    # web -> billing is not declared; api -> lonely neither; user -> web is not judged;
    # billing is not in the catalog, so billing -> stripe is not judged either.
    assert drift.undeclared == [("api", "lonely"), ("web", "billing")]
    # web declares legacy, which had no traffic; api and auth (any case) did.
    assert drift.unused == [("web", "legacy")]
    assert drift.only({"API"}).as_dict() == {
        "undeclared": [{"source": "api", "target": "lonely"}], "unused": []}


def test_declared_dependency_with_no_calls_in_the_window_is_unused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(docs(*CATALOG))
    snap = shop()
    snap.edges[("api", "db")].meta["calls"] = 0
    snap.edges[("api", "db")].rate_rps = 0.0
    assert ("api", "db") in find_drift(snap, load_catalog(path)).unused
