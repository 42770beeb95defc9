"""``/metrics`` of a real service and app: every diagnosis counter is exported, and the counters
of the caps and of pairing count what really happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector import diagnosis, replay
from collector.config import CollectorConfig
from collector.model import SpanRecord
from collector.service import CollectorService
from collector.wiring import build_app, build_service

PB = {"Content-Type": "application/x-protobuf"}


Scrape = Callable[[], Awaitable[dict[str, tuple[str, float]]]]


def against_app(service: CollectorService,
                scenario: Callable[[httpx.AsyncClient, Scrape], Awaitable[None]]) -> None:
    """Run ``scenario`` against the service's real app, in-process (no background tasks)."""

    async def run() -> None:
        transport = httpx.ASGITransport(app=build_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://conway") as client:
            await scenario(client, lambda: scrape(client))

    asyncio.run(run())


async def scrape(client: httpx.AsyncClient) -> dict[str, tuple[str, float]]:
    """Family name -> (type, value of its unlabelled sample) from ``GET /metrics``."""
    r = await client.get("/metrics")
    assert r.status_code == 200
    out: dict[str, tuple[str, float]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if not s.labels and s.name in (fam.name, fam.name + "_total"):
                out[fam.name] = (fam.type, s.value)
    return out


def span(trace: bytes, n: int, parent: int, kind: int, now: float, service: str,
         attributes: dict[str, object] | None = None) -> SpanRecord:
    start = int((now - 1) * 1e9) + n * 1000
    return SpanRecord(trace_id=trace, span_id=n.to_bytes(8, "big"),
                      parent_span_id=parent.to_bytes(8, "big") if parent else b"",
                      service=service, name=f"op{n}", kind=kind, start_ns=start,
                      end_ns=start + 500_000, error=False, attributes=attributes or {},
                      resource={"service.name": service})


def test_every_diagnosis_counter_is_on_metrics() -> None:
    service = build_service(CollectorConfig())
    got: dict[str, tuple[str, float]] = {}

    async def scenario(client: httpx.AsyncClient, metrics: Scrape) -> None:
        got.update(await metrics())

    against_app(service, scenario)
    counters = service.parts["diagnosis"].counters()
    unmapped = sorted(set(counters) - set(diagnosis.METRICS))
    assert not unmapped, (f"diagnosis counters {unmapped} are not exported: name them in "
                          f"collector.diagnosis.METRICS")
    stale = sorted(set(diagnosis.METRICS) - set(counters))
    assert not stale, f"collector.diagnosis.METRICS names keys counters() lacks: {stale}"
    for key, value in counters.items():
        kind, name, _ = diagnosis.METRICS[key]
        assert name.startswith("conway_"), name
        assert name in got, f"{key} ({name}) is missing from /metrics"
        assert got[name] == (kind, value), (key, got[name])


def test_new_counters_count_a_trace_past_the_span_cap() -> None:
    now = time.time()
    service = build_service(CollectorConfig(), clock=lambda: now)
    cap = service.parts["diagnosis"].traces.assembler.max_spans_per_trace
    trace = (7).to_bytes(16, "big")
    # One trace of cap + 5 spans: a root SERVER span, a database CLIENT call, internal spans.
    spans = [span(trace, 1, 0, 2, now, "front"),
             span(trace, 2, 1, 3, now, "front", {"db.system": "postgresql", "db.name": "orders"})]
    spans += [span(trace, n, 1, 1, now, "front") for n in range(3, cap + 6)]
    assert len(spans) == cap + 5

    async def scenario(client: httpx.AsyncClient, metrics: Scrape) -> None:
        r = await client.post("/v1/traces", content=replay.to_otlp_request(spans), headers=PB)
        assert r.status_code == 200, r.text
        got = await metrics()
        assert got["conway_diagnosis_spans_dropped_trace_full"] == ("counter", 5)
        assert got["conway_diagnosis_spans_seen"] == ("counter", cap + 5)
        assert got["conway_diagnosis_traces_pending"] == ("gauge", 1)
        assert got["conway_diagnosis_spans_pending"] == ("gauge", cap)
        assert got["conway_pairing_roots"] == ("counter", 1)  # user -> front
        assert got["conway_pairing_database"] == ("counter", 1)  # front -> orders
        assert got["conway_graph_calls"] == ("counter", 2)
        assert got["conway_graph_spans"] == ("counter", cap + 5)
        assert got["conway_spans_received"] == ("counter", cap + 5)

        # Once the trace goes quiet it is analysed: nothing pending, one trace finished.
        with service.lock:
            service.parts["diagnosis"].traces.flush(now + 60)
        got = await metrics()
        assert got["conway_diagnosis_traces_finished"] == ("counter", 1)
        assert got["conway_diagnosis_traces_pending"] == ("gauge", 0)

    against_app(service, scenario)


CATALOG = """\
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: payments}
spec: {type: team, children: []}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: payment}
spec: {type: service, lifecycle: production, owner: group:payments}
---
apiVersion: backstage.io/v1alpha1
kind: API
metadata: {name: payment-api}
spec: {type: openapi, lifecycle: production, owner: group:payments, definition: x}
"""


def test_the_catalog_in_force_and_a_bad_edit_are_on_metrics(tmp_path: Path) -> None:
    path = tmp_path / "catalog-info.yaml"
    path.write_text(CATALOG)
    service = build_service(CollectorConfig(catalog=path, data_dir=None))

    def series() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(service.metrics).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name.startswith(("conway_catalog", "conway_ownership"))}

    got = series()
    assert got[("conway_catalog_entities", (("kind", "component"),))] == 1
    assert got[("conway_catalog_entities", (("kind", "group"),))] == 1
    assert got[("conway_catalog_entities", (("kind", "ignored"),))] == 1  # the API
    assert got[("conway_catalog_errors", ())] == 0
    assert got[("conway_catalog_loads_total", ())] == 0
    assert got[("conway_catalog_loaded_timestamp_seconds", ())] > 0
    assert got[("conway_ownership_resource_teams_dropped_total", ())] == 0

    path.write_text(CATALOG.replace("owner: group:payments}", "owner: group:nobody}", 1))
    assert service.parts["ownership"].store.reload() is False
    got = series()
    assert got[("conway_catalog_errors", ())] >= 1
    assert got[("conway_catalog_loads_total", ())] == 1
    # The last good catalog stays in force.
    assert got[("conway_catalog_entities", (("kind", "component"),))] == 1
