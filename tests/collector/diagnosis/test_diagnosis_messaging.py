"""Messaging as production sends it (official SDK, OTLP over HTTP to a real collector server):
producer -> queue -> consumer with the queue as its own node, whose latency is the lag; a
consumer whose trace starts at the queue (a batch) is delivered from it; and the verdicts: a
failing consumer is the root cause (not its producer), a producer that cannot publish blames
the queue."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx
from diagnosis_sim import serve
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector import wiring
from collector.config import CollectorConfig, DiagnosisConfig
from collector.service import CollectorService

MS = 1_000_000
QUEUE = "kafka: order-events"
TOPIC = {"messaging.system": "kafka", "messaging.destination.name": "order-events"}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Shop:
    """checkout (SERVER, then PRODUCER to order-events) -> email (CONSUMER, a child of the
    producer's span) and shipping (CONSUMER of a batch: a root span, no parent, linked to the
    producers of the messages in the batch)."""

    def __init__(self, url: str) -> None:
        self.providers: dict[str, TracerProvider] = {}
        for name in ("checkout", "email", "shipping"):
            p = TracerProvider(resource=Resource.create({"service.name": name}))
            p.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=url + "/v1/traces"), max_queue_size=100_000))
            self.providers[name] = p
        self.rng = random.Random(9)
        self.unbatched: list[trace.SpanContext] = []

    def span(self, service: str, name: str, kind: SpanKind, parent: trace.Span | None,
             start: int, end: int, attrs: dict[str, str] | None = None,
             error: bool = False) -> trace.Span:
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        s = self.providers[service].get_tracer("t").start_span(
            name, context=ctx, kind=kind, start_time=start, attributes=attrs)
        if error:
            s.set_status(Status(StatusCode.ERROR, "failed"))
        s.end(end_time=end)
        return s

    def order(self, t0: int, consumer_fails: bool = False, publish_fails: bool = False) -> None:
        root = self.span("checkout", "POST /orders", SpanKind.SERVER, None, t0, t0 + 20 * MS,
                         error=publish_fails)
        publish = self.span("checkout", "order-events publish", SpanKind.PRODUCER, root,
                            t0 + 5 * MS, t0 + 8 * MS,
                            {**TOPIC, "messaging.operation.type": "publish"},
                            error=publish_fails)
        if publish_fails:
            return
        self.unbatched.append(publish.get_span_context())
        lag = int(self.rng.uniform(40, 60) * MS)
        start = t0 + 8 * MS + lag
        fails = consumer_fails and self.rng.random() < 0.5
        self.span("email", "order-events process", SpanKind.CONSUMER, publish, start,
                  start + 4 * MS, {**TOPIC, "messaging.operation.type": "process"}, error=fails)

    def batch(self, t0: int) -> None:
        links = [trace.Link(ctx) for ctx in self.unbatched]
        self.unbatched = []
        s = self.providers["shipping"].get_tracer("t").start_span(
            "order-events process", kind=SpanKind.CONSUMER, start_time=t0, links=links,
            attributes={**TOPIC, "messaging.operation.type": "process",
                        "messaging.batch.message_count": len(links)})
        s.end(end_time=t0 + 9 * MS)

    def flush(self) -> None:
        for p in self.providers.values():
            p.force_flush()

    def close(self) -> None:
        for p in self.providers.values():
            p.shutdown()


def run(clock: Clock, service: CollectorService, shop: Shop, seconds: int,
        each_second: Callable[[int], None]) -> None:
    for _ in range(seconds):
        each_second(int(clock.t * 1e9))
        shop.flush()
        clock.t += 1.0
        service.parts["diagnosis"].evaluate()


def collector(clock: Clock) -> CollectorService:
    return wiring.build_service(CollectorConfig(diagnosis=DiagnosisConfig(
        baseline_s=60.0, evaluate_interval_s=3600)), clock)


def test_the_queue_is_a_node_between_producer_and_consumers_with_the_lag() -> None:
    clock = Clock(time.time())
    service = collector(clock)
    with serve(service) as url:
        shop = Shop(url)
        try:
            def second(t: int) -> None:
                for i in range(5):
                    shop.order(t + i * 150 * MS)
                shop.batch(t + 900 * MS)

            run(clock, service, shop, 10, second)
            for _ in range(4):  # pairing's time to live
                clock.t += 1.0
                service.parts["graph"].tick(clock.t)
            graph = httpx.get(url + "/api/graph?window=60", timeout=10).json()
        finally:
            shop.close()
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert ("checkout", "email") not in edges and ("user", "shipping") not in edges
    assert edges[("checkout", QUEUE)]["connection_type"] == "messaging_system"
    # 50 messages published once each, delivered to email (the producer's child) and to
    # shipping (a batch a second, paired through its links).
    assert edges[("checkout", QUEUE)]["calls"] == 50
    assert edges[(QUEUE, "email")]["calls"] == 50
    assert edges[(QUEUE, "shipping")]["calls"] == 50
    queue = next(n for n in graph["nodes"] if n["id"] == QUEUE)
    assert queue["kind"] == "virtual" and queue["queue"] is True
    # The lag (email's ~50 ms, shipping's batch up to 900 ms), not the producer's 3 ms or a
    # consumer's 4 ms.
    assert queue["p50_ms"] >= 40 and queue["p99_ms"] >= 400


def test_a_failing_consumer_is_the_root_cause_and_a_failed_publish_blames_the_queue() -> None:
    clock = Clock(time.time())
    service = collector(clock)
    with serve(service) as url:
        shop = Shop(url)
        try:
            def healthy(t: int) -> None:
                for i in range(4):
                    shop.order(t + i * 200 * MS)

            def consumer_fails(t: int) -> None:
                for i in range(4):
                    shop.order(t + i * 200 * MS, consumer_fails=True)

            run(clock, service, shop, 70, healthy)
            run(clock, service, shop, 20, consumer_fails)
            first = httpx.get(url + "/api/incidents?status=open", timeout=10).json()
            run(clock, service, shop, 60, healthy)

            def publish_fails(t: int) -> None:
                for i in range(4):
                    shop.order(t + i * 200 * MS, publish_fails=True)

            run(clock, service, shop, 20, publish_fails)
            second = httpx.get(url + "/api/incidents?status=open", timeout=10).json()
        finally:
            shop.close()
    assert [i["root_cause"]["service"] for i in first["incidents"]] == ["email"]
    assert not first["incidents"][0]["impacted"]  # checkout published fine: not a victim
    named = {i["root_cause"]["service"] for i in second["incidents"]}
    assert QUEUE in named and "checkout" not in named, second
