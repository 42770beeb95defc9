"""Builds a collector: each concern installs itself on one `CollectorService`, in pipeline order.

Order (and why): the graph first (its traffic appender creates the nodes and edges every later
appender reads, and its consumer must see spans before anyone who reads pairing results), the
scraper (it feeds the graph's ``up``), then ownership (health and diagnosis report teams), then
diagnosis (health, root cause, blast radius), the pager (it reads the diagnosis' incidents;
only with ``--alertmanager`` or ``--page-webhook``), then the receiver's ingest counters, and
the checkpoint (with ``--data-dir``), which restores the graph and the counters before the
server answers anything, and last the archive of past minutes in the same dir. Each install
registers its own ``/metrics`` collector in ``service.metrics`` (also published as
``parts["metrics_registry"]``).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp

from collector import (
    archive,
    checkpoint,
    diagnosis,
    exposition,
    graph,
    mesh,
    ownership,
    paging,
    scraper,
)
from collector.app import create_app
from collector.config import CollectorConfig
from collector.service import Clock, CollectorService


def build_service(config: CollectorConfig, clock: Clock = time.time) -> CollectorService:
    service = CollectorService(config=config, clock=clock)
    service.parts["metrics_registry"] = service.metrics
    graph.install(service, config)
    scraper.install(service, config)
    mesh.install(service, config)

    ownership.install(service, config)
    diag = diagnosis.install(service, config)
    paging.install(service, config, diag)

    exposition.install(service, config)
    checkpoint.install(service, config)
    archive.install(service, config)
    return service


def build_app(service: CollectorService) -> ASGIApp:
    return create_app(service, service.metrics, service.parts["ingest"])
