"""Graph JSON in the collector's ``/api/graph`` shape, for unit tests of the builders."""

from __future__ import annotations

import random
from typing import Any

DEMO_TEAMS = {
    "frontend": "web",
    "ad": "web",
    "product-catalog": "discovery",
    "recommendation": "discovery",
    "checkout": "orders",
    "cart": "orders",
    "shipping": "orders",
    "payment": "payments",
    "currency": "payments",
    "fraud-detection": "payments",
    "email": "comms",
    "quote": None,
}
DEMO_CALLS = [
    ("user", "frontend"),
    ("frontend", "product-catalog"),
    ("frontend", "currency"),
    ("frontend", "cart"),
    ("frontend", "recommendation"),
    ("frontend", "ad"),
    ("frontend", "checkout"),
    ("recommendation", "product-catalog"),
    ("checkout", "cart"),
    ("checkout", "currency"),
    ("checkout", "payment"),
    ("checkout", "shipping"),
    ("checkout", "email"),
    ("checkout", "orders"),
    ("cart", "redis"),
    ("payment", "fraud-detection"),
    ("shipping", "quote"),
]


def node(
    name: str, team: str | None, *, kind: str = "service", health: str = "healthy",
    rate: float = 1.0, err: float = 0.0,
) -> dict[str, Any]:
    return {
        "id": name, "kind": kind, "team": team, "health": health, "rate_rps": rate,
        "error_ratio": err, "p50_ms": 5.0, "p95_ms": 20.0, "p99_ms": 40.0,
    }


def edge(src: str, dst: str, *, rate: float = 1.0, err: float = 0.0, conn: str = "") -> dict:
    return {
        "source": src, "target": dst, "rate_rps": rate, "error_ratio": err, "p50_ms": 4.0,
        "p95_ms": 18.0, "p99_ms": 30.0, "connection_type": conn, "health": "healthy",
    }


def demo_graph(*, rate: float = 1.0, failing: str | None = None) -> dict[str, Any]:
    nodes = [
        node(n, t, rate=rate, health="failing" if n == failing else "healthy",
             err=0.5 if n == failing else 0.0)
        for n, t in DEMO_TEAMS.items()
    ]
    nodes += [
        node("user", None, kind="virtual"),
        node("orders", None, kind="virtual"),
        node("redis", None, kind="virtual"),
    ]
    edges = [
        edge(s, d, rate=rate, conn="database" if d in ("orders", "redis") else "")
        for s, d in DEMO_CALLS
    ]
    return {"window_s": 60, "generated_at": 1000.0, "nodes": nodes, "edges": edges}


def big_graph(services: int, teams: int = 0) -> dict[str, Any]:
    """``services`` services in ``teams`` teams (0: all orphans), each calling the next."""
    names = [f"svc-{i:04d}" for i in range(services)]
    nodes = [node(n, f"team-{i % teams}" if teams else None) for i, n in enumerate(names)]
    edges = [edge(names[i], names[(i + 1) % services]) for i in range(services)]
    return {"window_s": 60, "generated_at": 1000.0, "nodes": nodes, "edges": edges}


def tangled_graph(services: int = 1000, teams: int = 50) -> dict[str, Any]:
    """Each service calls three others (seeded), at rates that differ (the busiest calls go
    from low-numbered services); ``svc-0999`` -> ``svc-0500`` fails every call."""
    rng = random.Random(5)
    names = [f"svc-{i:04d}" for i in range(services)]
    nodes = [node(n, f"team-{i % teams:02d}") for i, n in enumerate(names)]
    edges = [edge(n, rng.choice(names), rate=round(100.0 / (1 + i), 4))
             for i, n in enumerate(names) for _ in range(3)]
    edges.append(edge(names[-1], names[services // 2], rate=0.5, err=1.0))
    return {"window_s": 60, "generated_at": 1000.0, "nodes": nodes, "edges": edges}
