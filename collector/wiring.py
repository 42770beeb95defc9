"""Builds a collector: each concern installs itself on one `CollectorService`, in pipeline order.

Order (and why): the graph first (its traffic appender creates the nodes and edges every later
appender reads, and its consumer must see spans before anyone who reads pairing results), the
scraper (it feeds the graph's ``up``), then ownership (health and diagnosis report teams), then
diagnosis (health, root cause, blast radius), the pager (it reads the diagnosis' incidents;
only with ``--alertmanager`` or ``--page-webhook``), then the ``/metrics`` exposition, which reads
what the others registered, and last the checkpoint (with ``--data-dir``), which restores the
graph and the counters before the server answers anything.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp

from collector import checkpoint, diagnosis, graph, ownership, paging, scraper
from collector.app import create_app
from collector.exposition import ConwayCollector, IngestCounters, make_registry
from collector.service import Clock, CollectorConfig, CollectorService


def build_service(config: CollectorConfig, clock: Clock = time.time) -> CollectorService:
    service = CollectorService(config=config, clock=clock)
    g = graph.install(service, config)
    s = scraper.install(service, config)

    # --- other concerns, in pipeline order (the lead adds these calls) ---------------------
    ownership.install(service, config)
    diag = diagnosis.install(service, config)
    pager = paging.install(service, config, diag)
    # ----------------------------------------------------------------------------------------

    counters = IngestCounters()
    service.parts["ingest"] = counters
    registry = make_registry(ConwayCollector(g, counters, s, diagnosis=diag.counters))
    service.parts["metrics_registry"] = registry
    if pager is not None:
        registry.register(pager)
    cp = checkpoint.install(service, config)
    if cp is not None:
        registry.register(cp)
    return service


def build_app(service: CollectorService) -> ASGIApp:
    return create_app(service, service.parts["metrics_registry"], service.parts["ingest"])
