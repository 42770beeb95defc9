"""Zipkin v2 JSON decoding, including shared client/server spans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.model import DecodeError, SpanKind
from collector.otlp import MAX_ERRORS, UNKNOWN_SERVICE
from collector.zipkin import decode_spans, shared_server_span_id

TESTDATA = Path(__file__).parent / "testdata"
SHARED_ID = bytes.fromhex("4d1e00c0db9010db")


def _decode_fixture() -> Any:
    return decode_spans((TESTDATA / "zipkin-shared.json").read_bytes())


def test_fields_map_to_span_records() -> None:
    result = _decode_fixture()
    assert result.rejected == 0
    client, server, producer, local = result.spans
    assert client.trace_id == bytes(8) + bytes.fromhex("86154a4ba6e91385")  # 64-bit, padded
    assert producer.trace_id == bytes.fromhex("463ac35c9f6413ad48485a3953bb6124")
    assert (client.kind, server.kind, producer.kind, local.kind) == (
        SpanKind.CLIENT, SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.INTERNAL)
    assert client.service == "frontend"  # lower-cased, as Zipkin stores service names
    assert client.attributes == {"http.method": "GET", "http.path": "/api/cart",
                                 "peer.service": "cart", "network.peer.address": "10.0.0.2",
                                 "network.peer.port": 8106}
    assert client.start_ns == 1472470996199000000
    assert client.end_ns == client.start_ns + 207000 * 1000
    assert producer.end_ns == producer.start_ns  # no duration: an incomplete span, zero long
    assert producer.parent_span_id == SHARED_ID
    assert producer.attributes["peer.service"] == "kafka"
    assert client.resource == {"service.name": "frontend"}
    assert server.resource is producer.resource  # one resource dict per service


def test_error_tag_marks_the_span_failed_whatever_its_value() -> None:
    client, server, _, local = _decode_fixture().spans
    assert not client.error
    assert server.error and server.status_message == "timeout talking to redis"
    assert local.error and local.status_message == ""


def test_shared_server_half_meets_its_client_half_on_one_pairing_key() -> None:
    client, server, _, _ = _decode_fixture().spans
    assert client.span_id == SHARED_ID
    # Pairing keys a CLIENT by (trace, span_id) and a SERVER by (trace, parent_span_id).
    assert (server.trace_id, server.parent_span_id) == (client.trace_id, client.span_id)
    assert server.span_id != client.span_id and len(server.span_id) == 8
    assert server.span_id == shared_server_span_id(server.trace_id, SHARED_ID)  # stable


def test_missing_local_endpoint_is_unknown_service() -> None:
    body = [{"traceId": "a" * 16, "id": "b" * 16, "timestamp": 1, "duration": 1}]
    [span] = decode_spans(json.dumps(body).encode()).spans
    assert span.service == UNKNOWN_SERVICE


def test_invalid_spans_are_rejected_and_the_rest_kept() -> None:
    good = {"traceId": "a" * 16, "id": "b" * 16, "timestamp": 10, "duration": 1,
            "localEndpoint": {"serviceName": "cart"}}
    body = [
        good,
        {**good, "traceId": "not-hex"},
        {**good, "id": "0" * 16},
        {**good, "traceId": "0" * 32},
        {**good, "kind": "SIDEWAYS"},
        {**good, "timestamp": None},
        {**good, "duration": -5},
        {**good, "parentId": "x" * 16},
        {**good, "id": "c" * 17},
    ]
    result = decode_spans(json.dumps(body).encode())
    assert len(result.spans) == 1 and result.rejected == 8
    assert result.errors[0] == "[1]: traceId must be up to 32 hex characters, got 'not-hex'"
    joined = " | ".join(result.errors)
    for expected in ("id is all zeros", "traceId is all zeros", "kind 'SIDEWAYS'",
                     "timestamp must be epoch microseconds", "duration must be",
                     "parentId must be", "id must be up to 16 hex"):
        assert expected in joined


def test_rejection_reasons_are_bounded() -> None:
    body = [{"traceId": "zz", "id": "b" * 16, "timestamp": 1}] * 40
    result = decode_spans(json.dumps(body).encode())
    assert result.rejected == 40 and len(result.errors) == MAX_ERRORS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[{", "Zipkin: body is not valid JSON"),
        (b'{"resourceSpans": []}', "OTLP JSON goes to /v1/traces"),
        (b'[{"traceId": "a"}, 3]', "Zipkin: [1]: expected a span object, got int"),
    ],
)
def test_bodies_of_the_wrong_shape_are_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_spans(body)
    assert message in str(info.value)
