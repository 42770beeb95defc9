"""The team map: the snapshot's service graph collapsed to one node per team.

A pure function of a snapshot whose nodes already carry ``team`` (the ownership appender ran).

- Services with no team are grouped under ``(orphans)``.
- Virtual nodes (databases, caches, external APIs) with no team are grouped under
  ``(external)``, so a failing unowned dependency still shows; the ``user`` entry node is left
  out (its calls are the traffic entering the system, not a dependency of any team).
- Each team edge sums the calls, errors and rate of the service edges between the two teams;
  its ``error_ratio`` is errors / calls, its ``health`` the worst of theirs, and its ``p95_ms``
  the **largest** p95 among them: an upper bound (an exact p95 needs the merged histograms the
  snapshot does not carry) chosen so one slow call path is not averaged away by fast ones.
- Calls between services of the same team are counted on the team node as ``internal``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.apijson import rounded
from collector.model import Edge, Snapshot
from collector.vocabulary import USER_NODE, worst_health

ORPHANS = "(orphans)"
EXTERNAL = "(external)"

def edge_calls(edge: Edge, window_s: float) -> int:
    """Calls in the window: the traffic appender's count, else rate x window."""
    calls = edge.meta.get("calls")
    if isinstance(calls, int | float):
        return int(calls)
    return round(edge.rate_rps * window_s)


def edge_errors(edge: Edge, window_s: float) -> int:
    errors = edge.meta.get("errors")
    if isinstance(errors, int | float):
        return int(errors)
    return round(edge.error_ratio * edge_calls(edge, window_s))


def edge_dict(edge: Edge, window_s: float) -> dict[str, Any]:
    """A service edge as the team API shows it."""
    return {
        "source": edge.source,
        "target": edge.target,
        "calls": edge_calls(edge, window_s),
        "rate_rps": rounded(edge.rate_rps),
        "error_ratio": rounded(edge.error_ratio),
        "p95_ms": rounded(edge.p95_ms, 3),
        "health": edge.health,
    }


def group_of(snap: Snapshot, node_id: str) -> str | None:
    """The team-map node a graph node belongs to; None for nodes left out."""
    node = snap.nodes.get(node_id)
    if node is None or node.id == USER_NODE:
        return None
    if node.team is not None:
        return node.team
    return EXTERNAL if node.kind == "virtual" else ORPHANS


@dataclass
class _Tally:
    calls: int = 0
    errors: int = 0
    rate_rps: float = 0.0
    p95_ms: float | None = None
    healths: list[str] = field(default_factory=list)

    def add(self, edge: Edge, window_s: float) -> None:
        self.calls += edge_calls(edge, window_s)
        self.errors += edge_errors(edge, window_s)
        self.rate_rps += edge.rate_rps
        if edge.p95_ms is not None and math.isfinite(edge.p95_ms):
            self.p95_ms = edge.p95_ms if self.p95_ms is None else max(self.p95_ms, edge.p95_ms)
        self.healths.append(edge.health)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "rate_rps": rounded(self.rate_rps),
            "error_ratio": rounded(self.errors / self.calls) if self.calls else 0.0,
            "p95_ms": rounded(self.p95_ms, 3),
            "health": worst_health(self.healths),
        }


def team_map(snap: Snapshot, display_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"nodes": [{"id","display_name","health","services","internal"}], "edges": [...]}``."""
    names = display_names or {}
    members: dict[str, list[str]] = {}
    for node in snap.nodes.values():
        group = group_of(snap, node.id)
        if group is not None:
            members.setdefault(group, []).append(node.id)
    internal: dict[str, _Tally] = {}
    between: dict[tuple[str, str], _Tally] = {}
    for edge in snap.edges.values():
        src, dst = group_of(snap, edge.source), group_of(snap, edge.target)
        if src is None or dst is None:
            continue
        tally = internal.setdefault(src, _Tally()) if src == dst else between.setdefault(
            (src, dst), _Tally()
        )
        tally.add(edge, snap.window_s)
    nodes = []
    for group in sorted(members):
        inside = internal.get(group, _Tally()).as_dict()
        del inside["health"], inside["p95_ms"]
        nodes.append({
            "id": group,
            "display_name": names.get(group, group),
            "health": worst_health(snap.nodes[n].health for n in members[group]),
            "services": sorted(members[group]),
            "internal": inside,
        })
    edges = [
        {"source": src, "target": dst, **tally.as_dict()}
        for (src, dst), tally in sorted(between.items())
    ]
    return {"window_s": snap.window_s, "generated_at": snap.generated_at,
            "nodes": nodes, "edges": edges}
