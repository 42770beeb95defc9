"""Ownership: the Backstage catalog, on-call details, the team map, orphans and catalog drift.

``install(service, config)`` loads ``config.catalog`` (a ``catalog-info.yaml`` or a folder of
them; ``None`` means no catalog, so every owner comes from resource attributes or nobody) and
registers: the resource-attribute span consumer, the "ownership" appender, the
``/api/teams``, ``/api/teams/{name}`` and ``/api/teammap`` routes, the catalog watcher's
startup/shutdown hooks, and ``service.parts["ownership"]`` (an ``Ownership``, whose
``owner_of(name)`` other concerns call).

An invalid catalog at startup raises ``CatalogInvalid`` (a ``ValueError`` whose message lists
every problem); ``python -m collector`` should print it and exit, there being no good catalog
to keep. Later invalid edits are reported and the last good catalog stays in force. An empty
(or whitespace-only) catalog file, an alias bomb and an oversized file are invalid too, at
start-up as on a reload: an empty file is what a catalog being written looks like, never "no
teams" (run without ``--catalog`` for that). See ``collector.ownership.catalog`` for the limits.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.config import CollectorConfig
from collector.ownership.api import routes
from collector.ownership.catalog import CatalogError, CatalogInvalid, load_catalog
from collector.ownership.part import Ownership, OwnershipAppender
from collector.ownership.resolve import Owner, ResourceTeams
from collector.service import CollectorService

__all__ = [
    "CatalogError",
    "CatalogInvalid",
    "Owner",
    "Ownership",
    "OwnershipAppender",
    "ResourceTeams",
    "install",
    "load_catalog",
]


def install(service: CollectorService, config: CollectorConfig) -> None:
    """Register the ownership concern on ``service``; raise ``CatalogInvalid`` if the
    configured catalog cannot be used."""
    ownership = Ownership(config.catalog, service.clock)
    ownership.store.load_initial()
    poll_s = config.ownership.catalog_poll_s
    service.consumers.append(ownership.attrs)
    service.appenders.append(ownership.appender)
    service.routes.extend(routes(service, ownership))
    if ownership.store.path is not None:
        service.run_in_background(lambda: ownership.store.watch(poll_s))
    service.parts["ownership"] = ownership
    service.metrics.register(OwnershipCollector(ownership))


class OwnershipCollector(Collector):
    """The catalog in force and its reloads, and the resource-attribute teams' cap."""

    def __init__(self, ownership: Ownership) -> None:
        self.ownership = ownership

    def collect(self) -> Iterator[Metric]:
        store, attrs = self.ownership.store, self.ownership.attrs
        cat = store.catalog
        entities = GaugeMetricFamily("conway_catalog_entities",
                                     "Entities in the catalog in force, by kind (ignored: kinds "
                                     "Conway does not use, e.g. API)", labels=["kind"])
        for kind, n in (("group", len(cat.groups)), ("user", len(cat.users)),
                        ("system", len(cat.systems)), ("component", len(cat.components)),
                        ("resource", len(cat.resources)), ("ignored", cat.ignored)):
            entities.add_metric([kind], n)
        yield entities
        yield GaugeMetricFamily("conway_catalog_loaded_timestamp_seconds",
                                "When the catalog in force was loaded (0: no catalog)",
                                value=cat.loaded_at if store.path is not None else 0.0)
        yield CounterMetricFamily("conway_catalog_loads",
                                  "Catalog loads tried after the first (valid or not)",
                                  value=store.generation)
        yield GaugeMetricFamily("conway_catalog_errors",
                                "Problems in the catalog file(s) now on disk (the last good "
                                "catalog stays in force while there are any)",
                                value=len(store.errors))
        yield CounterMetricFamily("conway_ownership_resource_teams_dropped",
                                  "Spans of services whose resource-attribute team was not "
                                  "remembered: the most services it may remember were known",
                                  value=attrs.dropped)
