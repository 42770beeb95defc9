"""Spans from the official OpenTelemetry SDK, over OTLP/HTTP to a real collector server on
loopback, end as an incident on ``GET /api/incidents`` naming the failing callee.

The server runs in this process so its clock can be injected: simulated seconds pass between
exports, with no sleeping on the diagnosis' account.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector import diagnosis, wiring
from collector.service import CollectorConfig


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def collector(clock: Clock) -> Iterator[str]:
    port = free_port()
    config = CollectorConfig(port=port, extra={"diagnosis": {"baseline_s": 60.0}})
    service = wiring.build_service(config, clock)
    if "diagnosis" not in service.parts:  # until the lead wires it in build_service
        diagnosis.install(service, config)
    server = uvicorn.Server(uvicorn.Config(wiring.build_app(service), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:  # readiness, not a timed assertion
            if not thread.is_alive():
                raise RuntimeError("collector server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def provider(url: str, service: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service,
                                                 "service.version": "1.0"}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
    return p


def test_sdk_spans_to_an_incident_blaming_the_failing_callee() -> None:
    # Start at the real time: the receiver refuses spans far from its clock (the SDK stamps
    # real times); the simulated 93 s stay well inside its window.
    clock = Clock(time.time())
    with collector(clock) as url:
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

        try:
            run(70, payment_fails=False)
            run(20, payment_fails=True)
            clock.t += 3.0
            body = httpx.get(url + "/api/incidents?status=open", timeout=10).json()
        finally:
            for p in providers.values():
                p.shutdown()
    (incident,) = body["incidents"]
    assert incident["root_cause"]["service"] == "payment"
    assert incident["root_cause"]["kind"] == "errors"
    assert [d["service"] for d in incident["impacted"]] == ["checkout"]
    assert len(incident["root_cause"]["evidence"]["trace_ids"]) >= 1
