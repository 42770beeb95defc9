"""The demo's catalog: loads cleanly and covers every demo service except the orphan."""

from __future__ import annotations

import yaml
from ownership_helpers import DEMO_CATALOG, DEMO_SERVICES, demo_snapshot, snapshot

from collector.ownership.catalog import load_catalog
from collector.ownership.drift import find_drift
from collector.ownership.part import Ownership

TEAMS = {
    "web": ("Web Storefront", {"frontend", "ad"}),
    "discovery": ("Discovery", {"product-catalog", "recommendation"}),
    "orders": ("Orders", {"checkout", "cart", "shipping"}),
    "payments": ("Payments", {"payment", "currency", "fraud-detection"}),
    "comms": ("Customer Comms", {"email"}),
}


def test_demo_catalog_loads_and_covers_every_service_but_quote() -> None:
    cat = load_catalog(DEMO_CATALOG)
    assert {c.name for c in cat.components.values()} == set(DEMO_SERVICES) - {"quote"}
    assert {r.name for r in cat.resources.values()} == {"orders", "redis", "order-events"}
    own = Ownership(DEMO_CATALOG, clock=lambda: 0.0)
    own.store.load_initial()
    for team, (display, services) in TEAMS.items():
        for service in services:
            owner = own.owner_of(service)
            assert owner is not None and owner["team"] == team, service
            assert owner["display_name"] == display
            assert owner["source"] == "catalog"
            assert owner["on_call"] and owner["channel"] and owner["runbook"], service
    assert own.owner_of("quote") is None
    # The queue node is the topic's Resource, found by its destination's name.
    queue = own.owner_of("kafka: order-events")
    assert queue is not None and queue["team"] == "orders" and queue["source"] == "catalog"


def test_demo_drift_is_only_the_deliberate_undeclared_redis() -> None:
    drift = find_drift(demo_snapshot(), load_catalog(DEMO_CATALOG))
    assert drift.undeclared == [("cart", "redis")]
    assert drift.unused == []


def test_demo_catalog_matches_the_demo_topology_calls() -> None:
    """Every call the demo services make (catalog/topology.yaml) is declared, except the one
    deliberate gap; a topology change that the catalog misses fails here."""
    topology = yaml.safe_load((DEMO_CATALOG.parent / "topology.yaml").read_text())
    calls = {(name, call["to"]) for name, svc in topology["services"].items()
             for route in svc.get("routes") or [] for call in route.get("calls") or []}
    # A topic is drawn as its queue node: publishers call it, it delivers to consumers.
    queues = {t: f"{spec['system']}: {t}" for t, spec in (topology.get("topics") or {}).items()}
    calls |= {(name, queues[topic]) for name, svc in topology["services"].items()
              for route in svc.get("routes") or [] for topic in route.get("publishes") or []}
    calls |= {(queues[c["topic"]], name) for name, svc in topology["services"].items()
              for c in svc.get("consumes") or []}
    assert set(topology["services"]) == set(DEMO_SERVICES)
    nodes = {**{s: "service" for s in topology["services"]},
             **{v: "virtual" for v in topology.get("virtual") or {}},
             **{q: "virtual" for q in queues.values()}}
    snap = snapshot(nodes, [(s, t, 10, 0, 5.0) for s, t in sorted(calls)])
    drift = find_drift(snap, load_catalog(DEMO_CATALOG))
    assert drift.undeclared == [("cart", "redis")]
    assert drift.unused == []
