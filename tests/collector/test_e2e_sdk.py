"""Spans from the official OpenTelemetry Python SDK (OTLP/HTTP protobuf exporter) to a real
collector process produce the expected graph and service-graph metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from procs import start_collector, stop
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def collector() -> Iterator[str]:
    proc, url = start_collector()
    try:
        yield url
    finally:
        stop(proc)


def provider(url: str, service: str, version: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service,
                                                 "service.version": version}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    return p


def test_sdk_spans_build_the_graph(collector: str) -> None:
    front = provider(collector, "sdk-frontend", "1.0.0")
    cart = provider(collector, "sdk-cart", "2.1.0")
    try:
        ft, ct = front.get_tracer("t"), cart.get_tracer("t")
        for i in range(12):
            with ft.start_as_current_span("GET /", kind=SpanKind.SERVER):
                with ft.start_as_current_span("GET cart", kind=SpanKind.CLIENT) as client:
                    ctx = trace.set_span_in_context(client)
                    with ct.start_as_current_span("GET /cart", context=ctx,
                                                  kind=SpanKind.SERVER) as server:
                        if i % 4 == 0:  # 3 server errors
                            server.set_status(Status(StatusCode.ERROR, "boom"))
                            client.set_status(Status(StatusCode.ERROR, "500"))
                    with ct.start_as_current_span("GET redis", context=trace.set_span_in_context(
                            server), kind=SpanKind.CLIENT, attributes={"db.system": "redis"}):
                        pass
                if i == 5:  # one call that failed on the client alone (e.g. a timeout)
                    with ft.start_as_current_span("GET cart", kind=SpanKind.CLIENT) as c2:
                        c2.set_status(Status(StatusCode.ERROR, "timeout"))
                        ctx2 = trace.set_span_in_context(c2)
                        with ct.start_as_current_span("GET /cart", context=ctx2,
                                                      kind=SpanKind.SERVER):
                            pass
        assert cart.force_flush(10_000) and front.force_flush(10_000)
    finally:
        front.shutdown()
        cart.shutdown()

    deadline = time.monotonic() + 15
    edges: dict[tuple[str, str], dict[str, object]] = {}
    while time.monotonic() < deadline:
        g = httpx.get(f"{collector}/api/graph", params={"window": 120}).json()
        edges = {(e["source"], e["target"]): e for e in g["edges"]}
        if edges.get(("sdk-frontend", "sdk-cart"), {}).get("calls") == 13:
            break
        time.sleep(0.1)
    fc = edges[("sdk-frontend", "sdk-cart")]
    assert fc["calls"] == 13
    assert fc["errors"] == 4
    assert fc["server_errors"] == 3
    assert fc["client_only_errors"] == 1
    assert edges[("user", "sdk-frontend")]["calls"] == 12
    assert edges[("sdk-cart", "redis")]["connection_type"] == "database"
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["sdk-cart"]["versions"] == ["2.1.0"]
    assert nodes["redis"]["kind"] == "virtual"

    text = httpx.get(f"{collector}/metrics").text
    values = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("traces_service_graph_request_"):
                values[(s.name, s.labels.get("client"), s.labels.get("server"))] = s.value
    assert values[("traces_service_graph_request_total", "sdk-frontend", "sdk-cart")] == 13
    assert values[("traces_service_graph_request_failed_total", "sdk-frontend", "sdk-cart")] == 4
    assert values[("traces_service_graph_request_total", "sdk-cart", "redis")] == 12
