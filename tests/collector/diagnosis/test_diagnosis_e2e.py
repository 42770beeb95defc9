"""Spans from the official OpenTelemetry SDK, over OTLP/HTTP to a real collector server on
loopback, end as an incident on ``GET /api/incidents`` naming the failing callee.

The server runs in this process so its clock can be injected: simulated seconds pass between
exports, with no sleeping on the diagnosis' account, and the test runs the evaluation tick
each simulated second (the server's own evaluation task waits an hour).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
from diagnosis_sim import serve
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector import wiring
from collector.config import CollectorConfig, DiagnosisConfig
from collector.service import CollectorService


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@contextlib.contextmanager
def collector(clock: Clock) -> Iterator[tuple[str, CollectorService]]:
    config = CollectorConfig(diagnosis=DiagnosisConfig(baseline_s=60.0,
                                                       evaluate_interval_s=3600))
    service = wiring.build_service(config, clock)
    with serve(service) as url:
        yield url, service


def provider(url: str, service: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service,
                                                 "service.version": "1.0"}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
    return p


def test_sdk_spans_to_an_incident_blaming_the_failing_callee() -> None:
    # Start at the real time: the receiver refuses spans far from its clock (the SDK stamps
    # real times); the simulated 93 s stay well inside its window.
    clock = Clock(time.time())
    with collector(clock) as (url, service):
        providers = {name: provider(url, name) for name in ("checkout", "payment", "email")}
        tracers = {name: p.get_tracer("conway-test") for name, p in providers.items()}

        def request(payment_fails: bool) -> None:
            with tracers["checkout"].start_as_current_span(
                    "POST /checkout", kind=SpanKind.SERVER) as root:
                with tracers["checkout"].start_as_current_span(
                        "POST /charge", kind=SpanKind.CLIENT,
                        attributes={"peer.service": "payment"}) as call:
                    with tracers["payment"].start_as_current_span(
                            "POST /charge", kind=SpanKind.SERVER) as server:
                        if payment_fails:
                            server.set_status(Status(StatusCode.ERROR, "card processor 500"))
                    if payment_fails:
                        call.set_status(Status(StatusCode.ERROR))
                with tracers["checkout"].start_as_current_span(
                        "POST /send", kind=SpanKind.CLIENT,
                        attributes={"peer.service": "email"}):
                    with tracers["email"].start_as_current_span("POST /send",
                                                                kind=SpanKind.SERVER):
                        pass
                if payment_fails:
                    root.set_status(Status(StatusCode.ERROR))

        def run(seconds: int, payment_fails: bool) -> None:
            for _ in range(seconds):
                for _ in range(3):
                    request(payment_fails)
                for p in providers.values():
                    p.force_flush()
                clock.t += 1.0
                service.parts["diagnosis"].evaluate()

        try:
            run(70, payment_fails=False)
            run(20, payment_fails=True)
            for _ in range(3):
                clock.t += 1.0
                service.parts["diagnosis"].evaluate()
            body = httpx.get(url + "/api/incidents?status=open", timeout=10).json()
        finally:
            for p in providers.values():
                p.shutdown()
    (incident,) = body["incidents"]
    assert incident["root_cause"]["service"] == "payment"
    assert incident["root_cause"]["kind"] == "errors"
    (checkout,) = incident["impacted"]
    assert checkout["service"] == "checkout" and checkout["how"] == "traces"
    # Every failed checkout had payment's error below it: the share is checkable.
    assert checkout["explained"] == checkout["affected"] > 0 and checkout["share"] == 1.0
    assert checkout["trace_ids"]
    assert len(incident["root_cause"]["evidence"]["trace_ids"]) >= 1
