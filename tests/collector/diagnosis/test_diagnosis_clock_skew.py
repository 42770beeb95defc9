"""A service whose clock is 5 s ahead, sending through the official SDK to a real collector
server: its calls still pair, its spans are analysed in its callers' time, and a latency fault
below it is blamed on the slow callee, not on the skewed service or its caller.

Without the adjustment the skewed service's server span lies outside its caller's client span
(and its own client span outside the callee's server span), so no time is subtracted for the
callees and the waiting is counted as the callers' own: the wrong service looks slow."""

from __future__ import annotations

import random
import time

import httpx
from diagnosis_sim import serve
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from collector import wiring
from collector.config import CollectorConfig, DiagnosisConfig

MS = 1_000_000
SKEW_NS = 5_000 * MS  # checkout's clock is 5 s ahead


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def provider(url: str, service: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces"),
                                            max_queue_size=100_000))
    return p


def test_a_service_with_its_clock_ahead_is_paired_and_the_slow_callee_blamed() -> None:
    rng = random.Random(5)
    clock = Clock(time.time())
    config = CollectorConfig(diagnosis=DiagnosisConfig(baseline_s=60.0, evaluate_interval_s=3600))
    service = wiring.build_service(config, clock)
    with serve(service) as url:
        providers = {n: provider(url, n) for n in ("frontend", "checkout", "payment")}
        tracers = {n: p.get_tracer("conway-test") for n, p in providers.items()}

        def span(service_name: str, name: str, kind: SpanKind, parent: trace.Span | None,
                 start: int, end: int, attrs: dict[str, str] | None = None) -> trace.Span:
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            s = tracers[service_name].start_span(name, context=ctx, kind=kind,
                                                 start_time=start, attributes=attrs)
            s.end(end_time=end)
            return s

        def request(t0: int, pay_ms: float) -> None:
            pay = int((pay_ms + rng.uniform(0, 4)) * MS)
            own = int(rng.uniform(3, 6) * MS)
            total = pay + 3 * own
            fe = span("frontend", "GET /checkout", SpanKind.SERVER, None, t0, t0 + total)
            call = span("frontend", "POST /checkout", SpanKind.CLIENT, fe,
                        t0 + own // 2, t0 + total - own // 2, {"peer.service": "checkout"})
            # checkout's spans carry its clock: 5 s ahead of the others'.
            co = span("checkout", "POST /checkout", SpanKind.SERVER, call,
                      t0 + own + SKEW_NS, t0 + total - own + SKEW_NS)
            charge = span("checkout", "POST /charge", SpanKind.CLIENT, co,
                          t0 + 2 * own - MS // 2 + SKEW_NS, t0 + 2 * own + pay + MS // 2 + SKEW_NS,
                          {"peer.service": "payment"})
            span("payment", "POST /charge", SpanKind.SERVER, charge,
                 t0 + 2 * own, t0 + 2 * own + pay)

        def run(seconds: int, pay_ms: float) -> None:
            for _ in range(seconds):
                for i in range(4):
                    request(int((clock.t + i * 0.2) * 1e9), pay_ms)
                for p in providers.values():
                    p.force_flush()
                clock.t += 1.0
                service.parts["diagnosis"].evaluate()

        try:
            run(70, pay_ms=10.0)
            run(20, pay_ms=300.0)
            for _ in range(3):
                clock.t += 1.0
                service.parts["diagnosis"].evaluate()
            incidents = httpx.get(url + "/api/incidents?status=open", timeout=10).json()
            graph = httpx.get(url + "/api/graph?window=60", timeout=10).json()
        finally:
            for p in providers.values():
                p.shutdown()
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert {("frontend", "checkout"), ("checkout", "payment")} <= edges
    assert not any(e[1] in ("unknown", "127.0.0.1") for e in edges)
    causes = [(i["root_cause"]["service"], i["root_cause"]["kind"])
              for i in incidents["incidents"]]
    assert causes == [("payment", "latency")], causes
    counters = service.parts["diagnosis"].counters()
    # One per request: frontend -> checkout. Once checkout's spans are moved into frontend's
    # time, payment's server span lies inside checkout's call to it (same clock as frontend).
    assert counters["calls_clock_skewed"] == 90 * 4
