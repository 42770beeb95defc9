"""A snapshot as the API's JSON: one serialiser for the collector's read API
(`collector.readapi`) and the dashboard's Prometheus source (`dashboard.promsource`).

Numbers are rounded (rates and ratios to 6 digits, milliseconds to 3) and a missing or
non-finite value is null; a node's or edge's ``meta`` keys are passed on when they are plain
JSON, under the contract keys (which win).
"""

from __future__ import annotations

import math
from typing import Any

from collector.model import Edge, Node, Snapshot


def rounded(v: float | None, digits: int = 6) -> float | None:
    """JSON-friendly: fixed precision, and None for a missing or non-finite value."""
    if v is None or not math.isfinite(v):
        return None
    return round(v, digits)


def jsonable(v: Any, depth: int = 0) -> bool:
    """Plain JSON (finite numbers, strings, lists and string-keyed dicts, 6 levels deep)."""
    if depth > 6:
        return False
    if v is None or isinstance(v, str | bool | int):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list | tuple):
        return all(jsonable(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and jsonable(x, depth + 1) for k, x in v.items())
    return False


def node_json(n: Node) -> dict[str, Any]:
    """A node as the API serves it: meta keys that are plain JSON first, contract keys on top."""
    out = {k: v for k, v in n.meta.items() if jsonable(v)}
    out.update(
        id=n.id, kind=n.kind, team=n.team, health=n.health, rate_rps=rounded(n.rate_rps),
        error_ratio=rounded(n.error_ratio), p50_ms=rounded(n.p50_ms, 3),
        p95_ms=rounded(n.p95_ms, 3), p99_ms=rounded(n.p99_ms, 3),
    )
    return out


def edge_json(e: Edge) -> dict[str, Any]:
    """An edge as the API serves it: meta keys that are plain JSON first, contract keys on top."""
    out = {k: v for k, v in e.meta.items() if jsonable(v)}
    out.update(
        source=e.source, target=e.target, rate_rps=rounded(e.rate_rps),
        error_ratio=rounded(e.error_ratio), p50_ms=rounded(e.p50_ms, 3),
        p95_ms=rounded(e.p95_ms, 3), p99_ms=rounded(e.p99_ms, 3),
        connection_type=e.connection_type, health=e.health,
    )
    return out


def graph_json(snap: Snapshot) -> dict[str, Any]:
    """``GET /api/graph``'s body (the dashboard's Prometheus source adds its ``source`` and
    ``notes``)."""
    out = {
        "window_s": snap.window_s,
        "generated_at": snap.generated_at,
        "nodes": [node_json(snap.nodes[k]) for k in sorted(snap.nodes)],
        "edges": [edge_json(snap.edges[k]) for k in sorted(snap.edges)],
        "limits": snap.meta.get("limits", {}),
    }
    if snap.historical:
        # A past moment (``?at=``): say so, with the incidents open then and where the
        # health came from ("log": what the evaluation concluded; "judged": from the numbers).
        out["at"] = snap.generated_at
        out["incidents"] = [i for i in snap.meta.get("incidents", []) if jsonable(i)]
        out["health_source"] = snap.meta.get("health_source")
    return out


def peer_json(e: Edge, other: str) -> dict[str, Any]:
    """A caller or callee as a service page lists it."""
    return {"service": other, "rate_rps": rounded(e.rate_rps),
            "error_ratio": rounded(e.error_ratio), "p95_ms": rounded(e.p95_ms, 3),
            "health": e.health}
