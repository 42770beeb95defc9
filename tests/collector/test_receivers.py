"""The receiver registry: what is registered, and that a new receiver is served like the others
(ingest token, media types, admission, limits, counters) by the real app."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector import otlp
from collector.config import CollectorConfig, EdgeConfig
from collector.limits import SpanLimits
from collector.model import DecodeError, DecodeResult, SpanKind, SpanRecord
from collector.receivers import OTLP, RECEIVERS, ZIPKIN, Receiver, ReceiverRegistry
from collector.wiring import build_app, build_service

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
TEXT = {"content-type": "text/plain; charset=utf-8"}


def decode_lines(body: bytes, media: str, limits: SpanLimits) -> DecodeResult:
    """A tiny wire format: one root server span per line, the line naming its service."""
    result = DecodeResult()
    now = time.time_ns()
    for i, line in enumerate(body.decode().splitlines()):
        if not line.isidentifier():
            raise DecodeError(f"line {i + 1}: expected a service name, got {line!r}")
        result.spans.append(SpanRecord(
            trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=b"",
            service=line, name="GET /", kind=SpanKind.SERVER, start_ns=now - 1_000_000,
            end_ns=now, error=False, attributes={}, resource={"service.name": line}))
    return result


LINES = Receiver(path="/test/lines", media_types=("text/plain",), name="service lines",
                 decode=decode_lines)


@pytest.fixture
def lines_registered() -> Iterator[Receiver]:
    RECEIVERS.register(LINES)
    try:
        yield LINES
    finally:
        RECEIVERS.unregister(LINES)


def post_all(edge: EdgeConfig, *requests: tuple[str, bytes, dict[str, str]],
             max_body_bytes: int | None = None) -> tuple[list[httpx.Response], str]:
    """POST each request to a fresh app in-process; the responses and ``/metrics`` after."""
    config = CollectorConfig(edge=edge)
    if max_body_bytes is not None:
        config.max_body_bytes = max_body_bytes
    app = build_app(build_service(config))

    async def scenario() -> tuple[list[httpx.Response], str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://conway") as client:
            out = [await client.post(path, content=body, headers=headers)
                   for path, body, headers in requests]
            return out, (await client.get("/metrics")).text

    return asyncio.run(scenario())


def sample(metrics: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_otlp_and_zipkin_are_registered_by_path_and_media_type() -> None:
    assert RECEIVERS.paths()[:2] == ("/v1/traces", "/api/v2/spans")
    assert RECEIVERS.lookup("/v1/traces", "application/x-protobuf") is OTLP
    assert RECEIVERS.lookup("/v1/traces", "application/json") is OTLP
    assert RECEIVERS.lookup("/v1/traces", "") is None  # OTLP needs a Content-Type
    assert RECEIVERS.lookup("/api/v2/spans", "application/json") is ZIPKIN
    assert RECEIVERS.lookup("/api/v2/spans", "") is ZIPKIN  # Zipkin clients may send none
    assert RECEIVERS.lookup("/api/v2/spans", "application/x-protobuf") is None
    assert RECEIVERS.at("/v1/traces") == (OTLP,)
    assert OTLP.media_types == (otlp.PROTOBUF, otlp.JSON)


def test_register_refuses_a_taken_media_type_and_bad_descriptions() -> None:
    registry = ReceiverRegistry([OTLP, ZIPKIN])
    clash = Receiver(path="/v1/traces", media_types=("application/json",), name="other",
                     decode=decode_lines)
    with pytest.raises(ValueError, match="already has a receiver for application/json"):
        registry.register(clash)
    assert registry.at("/v1/traces") == (OTLP,)
    with pytest.raises(ValueError, match="must start with '/'"):
        Receiver(path="v1", media_types=("text/plain",), name="x", decode=decode_lines)
    with pytest.raises(ValueError, match="not a bare lower-case media type"):
        Receiver(path="/x", media_types=("Text/Plain; charset=utf-8",), name="x",
                 decode=decode_lines)
    with pytest.raises(ValueError, match="names no media type"):
        Receiver(path="/x", media_types=(), name="x", decode=decode_lines)
    registry.register(LINES)
    assert registry.paths() == ("/v1/traces", "/api/v2/spans", "/test/lines")
    registry.unregister(LINES)
    assert registry.paths() == ("/v1/traces", "/api/v2/spans")
    assert "/test/lines" not in RECEIVERS.paths()  # a copy's registrations stay there


def test_a_registered_receiver_is_served_behind_the_ingest_token(
    lines_registered: Receiver,
) -> None:
    (no_token, wrong_media_no_token, wrong_media, ok, malformed, get), metrics = post_all(
        EdgeConfig(ingest_token=TOKEN),
        ("/test/lines", b"shop\n", TEXT),
        ("/test/lines", b"shop\n", {"content-type": "application/json"}),
        ("/test/lines", b"shop\n", {**AUTH, "content-type": "application/json"}),
        ("/test/lines", b"shop\ncart\n", {**AUTH, **TEXT}),
        ("/test/lines", b"shop\n-\n", {**AUTH, **TEXT}),
        ("/test/lines/x", b"", AUTH),
    )
    # Refused before anything else without the token, whatever the media type.
    for r in (no_token, wrong_media_no_token):
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == 'Bearer realm="conway-ingest"'
        assert "needs an ingest token" in r.json()["error"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert wrong_media.status_code == 415
    assert wrong_media.json() == {"error": "Content-Type 'application/json' is not supported "
                                           "for service lines; send text/plain"}
    assert ok.status_code == 202, ok.text
    assert ok.json() == {"accepted": 2, "rejected": 0}
    assert malformed.status_code == 400
    assert malformed.json() == {"error": "line 2: expected a service name, got '-'"}
    assert get.status_code == 404
    assert sample(metrics, "conway_spans_received_total") == 2
    for reason, n in (("unauthorized", 2), ("unsupported_media_type", 1), ("malformed", 1)):
        assert sample(metrics, "conway_requests_rejected_total", reason=reason) == n, reason
    # Counted under its own path, like the built-in receivers.
    assert sample(metrics, "conway_http_requests_total", path="/test/lines", status="202") == 1


def test_a_registered_receiver_is_under_admission_and_body_limits(
    lines_registered: Receiver,
) -> None:
    (busy,), metrics = post_all(EdgeConfig(max_inflight_requests=0),
                                ("/test/lines", b"shop\n", TEXT))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "collector busy" in busy.json()["error"]
    assert sample(metrics, "conway_requests_rejected_total", reason="overloaded") == 1

    (large,), _ = post_all(EdgeConfig(), ("/test/lines", b"shop\n" * 100, TEXT), max_body_bytes=64)
    assert large.status_code == 413 and large.headers["connection"] == "close"
    assert "exceeds the collector's limit of 64 bytes" in large.json()["error"]


def test_a_path_dispatches_on_media_type_between_its_receivers() -> None:
    lines_on_otlp = Receiver(path="/v1/traces", media_types=("text/plain",),
                             name="service lines", decode=decode_lines)
    RECEIVERS.register(lines_on_otlp)
    try:
        (lines, pb, unknown), _ = post_all(
            EdgeConfig(),
            ("/v1/traces", b"shop\n", TEXT),
            ("/v1/traces", b"", {"content-type": otlp.PROTOBUF}),
            ("/v1/traces", b"", {"content-type": "text/csv"}),
        )
    finally:
        RECEIVERS.unregister(lines_on_otlp)
    assert RECEIVERS.at("/v1/traces") == (OTLP,)
    assert lines.status_code == 202 and lines.json()["accepted"] == 1
    assert pb.status_code == 200 and pb.headers["content-type"] == otlp.PROTOBUF
    # An unknown media type is answered by the path's first receiver (OTLP: a JSON Status),
    # naming every media type the path takes.
    assert unknown.status_code == 415
    assert unknown.headers["content-type"] == otlp.JSON
    assert unknown.json()["message"] == (
        "Content-Type 'text/csv' is not supported for OTLP traces; send "
        f"{otlp.PROTOBUF} or {otlp.JSON} or text/plain")
