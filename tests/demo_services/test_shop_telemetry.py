"""Traces and metrics of the running shop, received by a real OTLP/HTTP server in the test."""

from __future__ import annotations

import socket

import httpx
import pytest
from demo_harness import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    SPAN_KIND_SERVER,
    OtlpReceiver,
    Shop,
    SpanRow,
    services_in,
    trace_id_of,
)
from prometheus_client.parser import text_string_to_metric_families

from demo_services.telemetry import make_tracer_provider

HOME_SERVICES = {"frontend", "product-catalog", "currency", "cart", "recommendation", "ad"}
# email is not in the order's trace: it reads order-events in batches, in traces of its own.
CHECKOUT_SERVICES = {"frontend", "checkout", "cart", "currency", "payment", "fraud-detection",
                     "shipping", "quote"}


def _home_complete(spans: list[SpanRow]) -> bool:
    return HOME_SERVICES <= services_in(spans) and any(
        s.attrs.get("db.system") == "redis" for s in spans
    )


def _assert_links(spans: list[SpanRow]) -> None:
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.kind) for r in roots] == [("frontend", SPAN_KIND_SERVER)]
    for span in spans:
        if span.kind == SPAN_KIND_SERVER and span.parent_id:
            parent = by_id[span.parent_id]
            assert parent.kind == SPAN_KIND_CLIENT, span.name
            assert parent.service != span.service
            assert parent.attrs["peer.service"] == span.service
            assert parent.attrs["server.port"] == span.attrs["server.port"]
        if span.kind == SPAN_KIND_CLIENT:
            parent = by_id[span.parent_id]
            assert parent.kind == SPAN_KIND_SERVER and parent.service == span.service


def test_home_page_is_one_trace_across_services(shop: Shop, receiver: OtlpReceiver) -> None:
    response = httpx.get(shop.url("frontend") + "/", trust_env=False, timeout=10)
    assert response.status_code == 200
    spans = receiver.wait_trace(trace_id_of(response), _home_complete)
    assert HOME_SERVICES <= services_in(spans)
    _assert_links(spans)
    root = next(s for s in spans if not s.parent_id)
    assert root.attrs["http.route"] == "/"
    assert root.attrs["http.request.method"] == "GET"
    assert root.attrs["http.response.status_code"] == 200
    assert root.resource["service.namespace"] == "shop"
    assert root.resource["deployment.environment.name"] == "demo"
    assert root.resource["service.version"] == "2.3.1"
    assert root.resource["service.instance.id"]
    # Every span names its host and its service's process (the pid the control API reports).
    pids = {s["name"]: s["pid"] for s in shop.services()["services"]}
    for span in spans:
        assert span.resource["host.name"] == socket.gethostname(), span.service
        assert span.resource["process.pid"] == pids[span.service], span.service
    client = next(s for s in spans if s.kind == SPAN_KIND_CLIENT and s.attrs.get("peer.service")
                  == "currency")
    assert client.attrs["url.full"].endswith("/convert")
    assert client.attrs["http.response.status_code"] == 200
    redis = next(s for s in spans if s.attrs.get("db.system") == "redis")
    assert redis.service == "cart" and redis.kind == SPAN_KIND_CLIENT
    assert redis.attrs["db.operation.name"] == "HGETALL"
    assert "db.namespace" not in redis.attrs
    assert not any(s.error for s in spans)


def test_checkout_trace_reaches_payment_shipping_and_postgres(
    shop: Shop, receiver: OtlpReceiver
) -> None:
    response = httpx.post(shop.url("frontend") + "/checkout", trust_env=False, timeout=10)
    assert response.status_code == 200

    def complete(spans: list[SpanRow]) -> bool:
        return CHECKOUT_SERVICES <= services_in(spans) and any(
            s.attrs.get("db.system") == "postgresql" for s in spans
        )

    spans = receiver.wait_trace(trace_id_of(response), complete)
    assert CHECKOUT_SERVICES <= services_in(spans)
    _assert_links(spans)
    orders = next(s for s in spans if s.attrs.get("db.system") == "postgresql")
    assert orders.service == "checkout"
    assert orders.attrs["db.namespace"] == "orders"
    assert orders.attrs["db.operation.name"] == "INSERT"
    assert "email" not in services_in(spans)


def test_an_order_is_published_and_email_processes_it_in_a_linked_batch(
    shop: Shop, receiver: OtlpReceiver
) -> None:
    response = httpx.post(shop.url("frontend") + "/checkout", trust_env=False, timeout=10)
    assert response.status_code == 200
    trace_id = trace_id_of(response)
    spans = receiver.wait_trace(trace_id, lambda spans: any(
        s.kind == SPAN_KIND_PRODUCER for s in spans))
    (send,) = [s for s in spans if s.kind == SPAN_KIND_PRODUCER]
    assert (send.service, send.name) == ("checkout", "send order-events")
    assert send.attrs["messaging.system"] == "kafka"
    assert send.attrs["messaging.destination.name"] == "order-events"
    assert send.attrs["messaging.operation.type"] == "send"
    assert not send.error
    parent = next(s for s in spans if s.span_id == send.parent_id)
    assert (parent.service, parent.kind) == ("checkout", SPAN_KIND_SERVER)

    # email takes it in its next poll: one CONSUMER span for the batch, in a trace of its
    # own, linked to the span that published each message (the context in its headers).
    def processed() -> list[SpanRow]:
        return receiver.where(lambda s: s.kind == SPAN_KIND_CONSUMER
                              and (trace_id, send.span_id) in s.links)

    receiver.wait_trace(trace_id, lambda _: bool(processed()))
    (process,) = processed()
    assert (process.service, process.name) == ("email", "process order-events")
    assert process.parent_id == "" and process.trace_id != trace_id
    assert process.attrs["messaging.destination.name"] == "order-events"
    assert process.attrs["messaging.operation.type"] == "process"
    assert process.attrs["messaging.consumer.group.name"] == "email"
    assert process.attrs["messaging.batch.message_count"] == len(process.links) >= 1
    assert process.start_ns >= send.end_ns  # it waited in the queue: the lag
    assert not process.error

    def counted(service: str, family: str) -> float:
        text = httpx.get(shop.url(service) + "/metrics", trust_env=False, timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text) if f.name == family
                   for s in f.samples if s.name.endswith("_total")
                   and s.labels == {"topic": "order-events", "status": "ok"})

    assert counted("checkout", "messaging_client_sent_messages") >= 1
    assert counted("email", "messaging_client_consumed_messages") >= 1


def test_every_service_exposes_prometheus_metrics(shop: Shop) -> None:
    frontend = shop.url("frontend")
    assert httpx.get(frontend + "/", trust_env=False, timeout=10).status_code == 200
    expected = {
        "http_server_requests": "counter",
        "http_server_request_duration_seconds": "histogram",
        "http_client_requests": "counter",
        "http_client_request_duration_seconds": "histogram",
    }
    for entry in shop.services()["services"]:
        text = httpx.get(entry["url"] + "/metrics", trust_env=False, timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, kind in expected.items():
            assert families[name].type == kind, (entry["name"], name)
        info = families["service_build_info"].samples
        assert [s.labels["service_version"] for s in info] == [entry["version"]]
    text = httpx.get(frontend + "/metrics", trust_env=False, timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = [s for s in families["http_server_requests"].samples if s.name.endswith("_total")]
    assert any(
        s.labels == {"method": "GET", "route": "/", "status_code": "200"} and s.value >= 1
        for s in served
    )
    peers = {s.labels["peer"] for s in families["http_client_requests"].samples}
    assert {"product-catalog", "currency", "cart"} <= peers


def test_host_name_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=node-7,service.name=other")
    provider = make_tracer_provider("cart", "1.0", "cart-1", "http://127.0.0.1:9")
    try:
        attributes = provider.resource.attributes
        assert attributes["host.name"] == "node-7"
        assert attributes["service.name"] == "cart"  # the service's own name still wins
        assert isinstance(attributes["process.pid"], int)
    finally:
        provider.shutdown()
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    provider = make_tracer_provider("cart", "1.0", "cart-1", "http://127.0.0.1:9")
    try:
        assert provider.resource.attributes["host.name"] == socket.gethostname()
    finally:
        provider.shutdown()
