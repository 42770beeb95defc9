"""Who owns a graph node, and how we know.

Order, first answer wins:

0. for a workload the service mesh reports (``collector.mesh``): the catalog Component whose
   ``backstage.io/kubernetes-id`` annotation is the workload's app label (Istio's
   ``source_app`` / ``destination_app``, a Linkerd deployment without its version suffix) or
   its workload name, in that order; ``source`` "catalog (backstage.io/kubernetes-id)";
1. the catalog: a Component named like the service (for a virtual node: a Resource, then a
   Component, of that name; for a queue node ``kafka: order-events``, also the Resource
   ``order-events``); its ``spec.owner``, or its System's owner; ``source`` "catalog";
2. the resource attribute ``team`` (then ``service.owner.name``) last seen on the service's
   spans; ``source`` "resource attribute";
3. nobody: a service is then an orphan, listed as such and never guessed. A virtual node
   (database, cache, external API) with no catalog entry simply has no team: it is not an
   orphan, and neither is the ``user`` entry node.

Contact details resolve per field: the Component's own annotations, then the owner's (a User
owner pages that user), then the team Group's, then its parent Groups' (``spec.parent``), so a
sub-team that names no on-call is paged through its parent's rotation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from collector.model import SpanRecord
from collector.ownership.catalog import Catalog, Component, Group
from collector.ownership.contact import Contact
from collector.vocabulary import USER_NODE, queue_destination

log = logging.getLogger(__name__)

SOURCE_CATALOG = "catalog"
SOURCE_RESOURCE = "resource attribute"
SOURCE_KUBERNETES_ID = "catalog (backstage.io/kubernetes-id)"
RESOURCE_TEAM_KEYS = ("team", "service.owner.name")
DEFAULT_MAX_SERVICES = 10_000
MAX_PARENT_DEPTH = 16  # Group parents walked for contact details; also stops a parent cycle


@dataclass(frozen=True, slots=True)
class Owner:
    team: str
    display_name: str
    source: str
    contact: Contact

    def as_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "display_name": self.display_name,
            "on_call": self.contact.on_call,
            "channel": self.contact.channel,
            "runbook": self.contact.runbook,
            "email": self.contact.email,
            "source": self.source,
        }


class ResourceTeams:
    """A span consumer remembering, per service, the team its resource attributes last named.

    At most ``max_services`` services are remembered; spans of further services are not
    recorded and counted in ``dropped`` (those services fall back to being orphans).
    """

    def __init__(self, max_services: int = DEFAULT_MAX_SERVICES) -> None:
        self.max_services = max_services
        self.dropped = 0
        self._teams: dict[str, str] = {}

    def consume(self, spans: Sequence[SpanRecord], now: float) -> None:
        last: tuple[str, int] | None = None
        for span in spans:
            # Spans of one resource share its dict: look each (service, resource) up once.
            key = (span.service, id(span.resource))
            if key == last:
                continue
            last = key
            team = _team_attribute(span.resource)
            if team is None:
                self._teams.pop(span.service, None)
            elif span.service in self._teams or len(self._teams) < self.max_services:
                self._teams[span.service] = team
            else:
                if self.dropped == 0:
                    log.warning("remembering resource-attribute teams of at most %d services; "
                                "further services are not recorded", self.max_services)
                self.dropped += 1

    def team_of(self, service: str) -> str | None:
        return self._teams.get(service)

    def services(self) -> dict[str, str]:
        return dict(self._teams)


def _team_attribute(resource: dict[str, Any]) -> str | None:
    for key in RESOURCE_TEAM_KEYS:
        value = resource.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def group_contact(catalog: Catalog, group: Group) -> Contact:
    """The group's contact, each missing field taken from the nearest parent that has it."""
    contact = group.contact
    seen = {group.ref}
    parent = catalog.groups.get(group.parent) if group.parent is not None else None
    for _ in range(MAX_PARENT_DEPTH):
        if parent is None or parent.ref in seen:
            break
        seen.add(parent.ref)
        contact = contact.over(parent.contact)
        parent = catalog.groups.get(parent.parent) if parent.parent is not None else None
    return contact


def catalog_owner(catalog: Catalog, entity: Component) -> Owner | None:
    """The owner of a validated Component/Resource (its own, else its System's)."""
    owner_ref = entity.owner
    if owner_ref is None and entity.system is not None:
        system = catalog.systems.get(entity.system)
        owner_ref = system.owner if system is not None else None
    if owner_ref is None:
        return None
    group = catalog.groups.get(owner_ref)
    contact = entity.contact
    if group is None:
        user = catalog.users.get(owner_ref)
        if user is None or not user.member_of:
            return None  # validation rejects both; kept for safety on hand-built catalogs
        group = catalog.groups.get(user.member_of[0])
        if group is None:
            return None
        # A User owner is the person to page unless an annotation says otherwise.
        personal = Contact(on_call=user.contact.on_call or user.display_name,
                           channel=user.contact.channel, runbook=user.contact.runbook,
                           email=user.contact.email)
        contact = contact.over(personal)
    return Owner(group.team, group.display_name, SOURCE_CATALOG,
                 contact.over(group_contact(catalog, group)))


def _attribute_owner(catalog: Catalog, team: str) -> Owner:
    group: Group | None = catalog.group_named(team)
    if group is not None:
        return Owner(group.team, group.display_name, SOURCE_RESOURCE,
                     group_contact(catalog, group))
    return Owner(team, team, SOURCE_RESOURCE, Contact())


def resolve_owner(catalog: Catalog, attrs: ResourceTeams, name: str,
                  kind: str = "service", kubernetes_ids: Sequence[str] = ()) -> Owner | None:
    """``kubernetes_ids``: the app labels then workload names the mesh knows the node by."""
    if name == USER_NODE and kind != "service":
        return None
    for kid in kubernetes_ids:
        by_id = catalog.component_by_kubernetes_id(kid)
        owner = catalog_owner(catalog, by_id) if by_id is not None else None
        if owner is not None:
            return replace(owner, source=SOURCE_KUBERNETES_ID)
    if kind == "virtual":
        # A queue node (kafka: order-events) is the Resource of its destination's name.
        dest = queue_destination(name)
        entity = (catalog.resource_named(name)
                  or (catalog.resource_named(dest) if dest is not None else None)
                  or catalog.component_named(name))
    else:
        entity = catalog.component_named(name)
    if entity is not None:
        owner = catalog_owner(catalog, entity)
        if owner is not None:
            return owner
    team = attrs.team_of(name) if kind == "service" else None
    return _attribute_owner(catalog, team) if team is not None else None


def is_orphan(name: str, kind: str, owner: Owner | None) -> bool:
    return owner is None and kind == "service" and name != USER_NODE
