"""The ownership concern as one object: catalog store, resource-attribute memory, appender.

Published as ``service.parts["ownership"]``; other concerns call ``owner_of(name)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.model import Node, Snapshot
from collector.ownership.catalog import Catalog
from collector.ownership.contact import Contact
from collector.ownership.drift import find_drift
from collector.ownership.resolve import (
    DEFAULT_MAX_SERVICES,
    Owner,
    ResourceTeams,
    group_contact,
    is_orphan,
    resolve_owner,
)
from collector.ownership.teammap import edge_dict, team_map
from collector.ownership.watch import CatalogStore
from collector.vocabulary import queue_destination


@dataclass
class TeamRow:
    team: str
    display_name: str
    contact: Contact
    services: dict[str, str] = field(default_factory=dict)  # name -> source
    resources: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.team,
            "display_name": self.display_name,
            "on_call": self.contact.on_call,
            "channel": self.contact.channel,
            "runbook": self.contact.runbook,
            "email": self.contact.email,
            "services": sorted(self.services),
            "resources": sorted(self.resources),
        }


def kubernetes_ids(node: Node) -> tuple[str, ...]:
    """What a mesh workload may be annotated as (``backstage.io/kubernetes-id``): its app
    labels, then its workload names (``node.meta["mesh"]``, set by ``collector.mesh``)."""
    mesh = node.meta.get("mesh")
    if not isinstance(mesh, dict):
        return ()
    ids = [str(a) for a in mesh.get("apps") or ()] + [str(w) for w in mesh.get("workloads") or ()]
    return tuple(dict.fromkeys(ids))


class OwnershipAppender:
    """Sets ``node.team``, ``node.meta["team_source"]`` and ``node.meta["owner"]`` (the
    ``owner_of`` dict or None, for the service page) on every node, and ``snap.meta["orphans"]``
    (sorted service names with no owner)."""

    name = "ownership"

    def __init__(self, ownership: Ownership) -> None:
        self.ownership = ownership

    def append(self, snap: Snapshot) -> None:
        orphans = []
        for node in snap.nodes.values():
            owner = self.ownership.owner(node.id, node.kind, kubernetes_ids(node))
            node.team = owner.team if owner is not None else None
            node.meta["team_source"] = owner.source if owner is not None else None
            node.meta["owner"] = owner.as_dict() if owner is not None else None
            if is_orphan(node.id, node.kind, owner):
                orphans.append(node.id)
        snap.meta["orphans"] = sorted(orphans)


class Ownership:
    def __init__(self, path: Path | None, clock: Callable[[], float],
                 max_services: int = DEFAULT_MAX_SERVICES) -> None:
        self.store = CatalogStore(path, clock)
        self.attrs = ResourceTeams(max_services)
        self.appender = OwnershipAppender(self)

    @property
    def catalog(self) -> Catalog:
        return self.store.catalog

    def reload(self) -> bool:
        return self.store.reload()

    def owner(self, name: str, kind: str = "service",
              kubernetes_ids: Sequence[str] = ()) -> Owner | None:
        return resolve_owner(self.store.catalog, self.attrs, name, kind, kubernetes_ids)

    def owner_of(self, name: str) -> dict[str, Any] | None:
        """``{"team","display_name","on_call","channel","runbook","email","source"}`` or None.

        ``name`` is a service or a virtual node (e.g. a database owned by a catalog Resource).
        """
        owner = self.owner(name, "service") or self.owner(name, "virtual")
        return owner.as_dict() if owner is not None else None

    def catalog_status(self) -> dict[str, Any]:
        cat = self.store.catalog
        return {
            "path": str(self.store.path) if self.store.path is not None else None,
            "loaded_at": cat.loaded_at if self.store.path is not None else None,
            "entities": cat.entities,
            "errors": [e.as_dict() for e in self.store.errors],
        }

    def limits(self) -> dict[str, int]:
        return {
            "remembered": len(self.attrs.services()),
            "max_services": self.attrs.max_services,
            "dropped": self.attrs.dropped,
        }

    def teams(self, snap: Snapshot) -> dict[str, TeamRow]:
        """Every team: catalog Groups (even with nothing yet), and teams named only by
        resource attributes; with the services and resources each owns."""
        cat = self.store.catalog
        rows = {g.team: TeamRow(g.team, g.display_name, group_contact(cat, g))
                for g in cat.groups.values()}
        services = {c.name.lower(): c.name for c in cat.components.values()}
        services.update({s.lower(): s for s in self.attrs.services()})
        resources = {r.name.lower(): r.name for r in cat.resources.values()}
        for node in snap.nodes.values():
            if node.kind == "service":
                services[node.id.lower()] = node.id
                continue
            # A queue node stands for its topic's Resource (kafka: order-events, order-events).
            dest = queue_destination(node.id)
            key = dest.lower() if dest is not None and dest.lower() in resources else None
            resources[key or node.id.lower()] = node.id
        for names, kind in ((services, "service"), (resources, "virtual")):
            for name in names.values():
                owner = self.owner(name, kind)
                if owner is None:
                    continue
                row = rows.get(owner.team)
                if row is None:
                    group = cat.group_named(owner.team)
                    row = rows[owner.team] = TeamRow(
                        owner.team, owner.display_name,
                        group_contact(cat, group) if group is not None else Contact(),
                    )
                (row.services if kind == "service" else row.resources)[name] = owner.source
        return dict(sorted(rows.items()))

    def find_team(self, snap: Snapshot, name: str) -> TeamRow | None:
        for team, row in self.teams(snap).items():
            if team.lower() == name.lower():
                return row
        return None

    def teams_payload(self, snap: Snapshot) -> dict[str, Any]:
        return {
            "teams": [row.summary() for row in self.teams(snap).values()],
            "orphans": list(snap.meta.get("orphans", [])),
            "catalog": self.catalog_status(),
            "resource_attributes": self.limits(),
        }

    def team_payload(self, snap: Snapshot, row: TeamRow) -> dict[str, Any]:
        def health(name: str) -> str:
            node = snap.nodes.get(name)
            return node.health if node is not None else "unknown"

        mine = {n.id for n in snap.nodes.values() if n.team == row.team}
        edges_out, edges_in, inside = [], [], []
        for edge in snap.edges.values():
            out, into = edge.source in mine, edge.target in mine
            item = edge_dict(edge, snap.window_s)
            if out and into:
                inside.append(item)
            elif out:
                edges_out.append(item)
            elif into:
                edges_in.append(item)
        cat = self.store.catalog
        catalogued = {name for name in row.services if cat.component_named(name) is not None}
        drift = find_drift(snap, cat).only(catalogued)
        return {
            **{k: v for k, v in row.summary().items() if k not in ("services", "resources")},
            "services": [{"name": n, "health": health(n), "source": s}
                         for n, s in sorted(row.services.items())],
            "resources": [{"name": n, "health": health(n), "source": s}
                          for n, s in sorted(row.resources.items())],
            "edges_out": sorted(edges_out, key=_pair),
            "edges_in": sorted(edges_in, key=_pair),
            "edges_internal": sorted(inside, key=_pair),
            "drift": drift.as_dict(),
        }

    def teammap_payload(self, snap: Snapshot) -> dict[str, Any]:
        names = {row.team: row.display_name for row in self.teams(snap).values()}
        return team_map(snap, names)


def _pair(item: dict[str, Any]) -> tuple[str, str]:
    return (item["source"], item["target"])
