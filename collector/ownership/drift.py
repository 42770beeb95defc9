"""Catalog drift: where the catalog's ``spec.dependsOn`` and the observed traffic disagree.

Only Components in the catalog are judged (an uncatalogued service declares nothing).

- ``undeclared``: a call in the window from a catalogued Component to a service or a virtual
  node (database, cache) that its ``dependsOn`` does not name;
- ``unused``: a ``dependsOn`` entry with no call in the window.

Names compare case-insensitively, as Backstage names do; a ``component:`` and a ``resource:``
reference both match the graph node of that name, and a queue node (``kafka: order-events``)
is matched by its destination (``resource:order-events``): its producers call it and its
consumers, which read from it, depend on it too. References to other kinds (e.g. ``api:``)
are not traffic and are not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.model import Snapshot
from collector.ownership.catalog import Catalog
from collector.ownership.teammap import edge_calls
from collector.vocabulary import USER_NODE, queue_destination

TRAFFIC_KINDS = ("component", "resource")


@dataclass
class Drift:
    undeclared: list[tuple[str, str]] = field(default_factory=list)
    unused: list[tuple[str, str]] = field(default_factory=list)

    def only(self, sources: set[str]) -> Drift:
        """The drift of these components only (names compare case-insensitively)."""
        keep = {s.lower() for s in sources}
        return Drift([p for p in self.undeclared if p[0].lower() in keep],
                     [p for p in self.unused if p[0].lower() in keep])

    def as_dict(self) -> dict[str, Any]:
        return {
            "undeclared": [{"source": s, "target": t} for s, t in self.undeclared],
            "unused": [{"source": s, "target": t} for s, t in self.unused],
        }


def find_drift(snap: Snapshot, catalog: Catalog) -> Drift:
    """Drift between ``catalog`` and ``snap``; pairs use the graph's node names where known."""
    by_lower = {node_id.lower(): node_id for node_id in snap.nodes}
    queues: dict[str, str] = {}  # queue node -> the catalog name of its destination
    for node_id, node in snap.nodes.items():
        dest = queue_destination(node_id) if node.kind == "virtual" else None
        if dest is not None:
            queues[node_id] = dest.lower()
            by_lower.setdefault(dest.lower(), node_id)
    observed: set[tuple[str, str]] = set()  # lower-cased
    for edge in snap.edges.values():
        if edge.source == USER_NODE or edge.target == USER_NODE:
            continue
        if not (edge_calls(edge, snap.window_s) > 0 or edge.rate_rps > 0):
            continue
        caller, callee = snap.nodes.get(edge.source), snap.nodes.get(edge.target)
        if caller is not None and caller.kind == "service":
            observed.add((edge.source.lower(), queues.get(edge.target, edge.target.lower())))
        elif edge.source in queues and callee is not None and callee.kind == "service":
            observed.add((edge.target.lower(), queues[edge.source]))  # a consumer reads it
    drift = Drift()
    for component in sorted(catalog.components.values(), key=lambda c: str(c.ref)):
        src = component.name.lower()
        declared = {r.name for r in component.depends_on if r.kind in TRAFFIC_KINDS}
        name = by_lower.get(src, component.name)
        for s, t in sorted(observed):
            if s == src and t not in declared:
                drift.undeclared.append((name, by_lower.get(t, t)))
        for ref in dict.fromkeys(component.depends_on):  # a repeated entry is reported once
            if ref.kind in TRAFFIC_KINDS and (src, ref.name) not in observed:
                target = catalog.components.get(ref) or catalog.resources.get(ref)
                spelled = target.name if target is not None else ref.name
                drift.unused.append((name, by_lower.get(ref.name, spelled)))
    return drift
