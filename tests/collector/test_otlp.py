"""OTLP decoding: protobuf and both JSON dialects, partial rejection, responses."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from collector.model import DecodeError, SpanKind
from collector.otlp import (
    JSON,
    MAX_ERRORS,
    MAX_VALUE_DEPTH,
    PROTOBUF,
    UNKNOWN_SERVICE,
    decode_traces,
    encode_response,
    encode_status,
)
from collector.wire import UnsupportedMediaType

TESTDATA = Path(__file__).parent / "testdata"
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")


def _request(service: str | None = "checkout") -> tuple[ExportTraceServiceRequest, Any]:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    if service is not None:
        kv = rs.resource.attributes.add()
        kv.key = "service.name"
        kv.value.string_value = service
    return request, rs.scope_spans.add()


def _add_span(scope: Any, span_id: bytes = SPAN, trace_id: bytes = TRACE, start: int = 100,
              end: int = 200) -> Span:
    span: Span = scope.spans.add()
    span.trace_id = trace_id
    span.span_id = span_id
    span.parent_span_id = PARENT
    span.name = "GET /cart"
    span.kind = Span.SPAN_KIND_CLIENT
    span.start_time_unix_nano = start
    span.end_time_unix_nano = end
    return span


def _nested_array(levels: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(levels):
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    return value


def test_protobuf_span_fields_and_every_attribute_type() -> None:
    request, scope = _request()
    span = _add_span(scope)
    span.status.code = 2  # type: ignore[assignment]
    span.status.message = "card declined"
    values = {
        "s": AnyValue(string_value="cart"),
        "empty": AnyValue(string_value=""),
        "i": AnyValue(int_value=-42),
        "d": AnyValue(double_value=0.5),
        "b": AnyValue(bool_value=True),
        "raw": AnyValue(bytes_value=b"\x00\x01"),
        "none": AnyValue(),
    }
    for key, value in values.items():
        kv = span.attributes.add()
        kv.key = key
        kv.value.CopyFrom(value)
    kv = span.attributes.add()
    kv.key = "arr"
    kv.value.array_value.values.add().int_value = 1
    kv.value.array_value.values.add().string_value = "two"
    kv = span.attributes.add()
    kv.key = "map"
    inner = kv.value.kvlist_value.values.add()
    inner.key = "k"
    inner.value.bool_value = False

    result = decode_traces(request.SerializeToString(), PROTOBUF)

    assert result.rejected == 0 and result.errors == []
    [record] = result.spans
    assert (record.trace_id, record.span_id, record.parent_span_id) == (TRACE, SPAN, PARENT)
    assert (record.service, record.name, record.kind) == ("checkout", "GET /cart",
                                                          SpanKind.CLIENT)
    assert (record.start_ns, record.end_ns, record.duration_ns) == (100, 200, 100)
    assert record.error is True and record.status_message == "card declined"
    assert record.attributes == {
        "s": "cart", "empty": "", "i": -42, "d": 0.5, "b": True, "raw": b"\x00\x01",
        "none": None, "arr": [1, "two"], "map": {"k": False},
    }
    assert record.resource == {"service.name": "checkout"}


def test_spans_of_one_resource_share_its_attribute_dict() -> None:
    request, scope = _request()
    _add_span(scope, span_id=b"\x01" * 8)
    _add_span(scope, span_id=b"\x02" * 8)
    first, second = decode_traces(request.SerializeToString(), PROTOBUF).spans
    assert first.resource is second.resource


def test_missing_service_name_is_unknown_service_not_a_rejection() -> None:
    request, scope = _request(service=None)
    _add_span(scope)
    result = decode_traces(request.SerializeToString(), PROTOBUF)
    assert result.rejected == 0
    assert result.spans[0].service == UNKNOWN_SERVICE


def test_unusable_spans_are_rejected_and_the_rest_kept() -> None:
    request, scope = _request()
    _add_span(scope, span_id=b"\x01" * 8)  # fine
    _add_span(scope, trace_id=b"\x01" * 8)  # trace id too short
    _add_span(scope, trace_id=bytes(16))  # all-zero trace id
    _add_span(scope, span_id=bytes(8))  # all-zero span id
    _add_span(scope, span_id=b"\x05" * 3)  # span id too short
    _add_span(scope, span_id=b"\x06" * 8, start=300, end=200)  # ends before it starts
    deep = _add_span(scope, span_id=b"\x07" * 8)
    kv = deep.attributes.add()
    kv.key = "too.deep"
    kv.value.CopyFrom(_nested_array(MAX_VALUE_DEPTH + 1))
    ok_deep = _add_span(scope, span_id=b"\x08" * 8)
    kv = ok_deep.attributes.add()
    kv.key = "deep.enough"
    kv.value.CopyFrom(_nested_array(MAX_VALUE_DEPTH))

    result = decode_traces(request.SerializeToString(), PROTOBUF)

    assert [s.span_id for s in result.spans] == [b"\x01" * 8, b"\x08" * 8]
    assert result.rejected == 6
    reasons = " | ".join(result.errors)
    for expected in ("trace_id must be 16 bytes, got 8", "trace_id is all zeros",
                     "span_id is all zeros", "span_id must be 8 bytes, got 3",
                     "before start_time_unix_nano", f"deeper than {MAX_VALUE_DEPTH}"):
        assert expected in reasons
    assert result.errors[0].startswith("resource_spans[0].scope_spans[0].spans[1]:")


def test_rejection_reasons_are_bounded_but_the_count_is_exact() -> None:
    request, scope = _request()
    for _ in range(50):
        _add_span(scope, trace_id=bytes(16))
    result = decode_traces(request.SerializeToString(), PROTOBUF)
    assert result.rejected == 50
    assert len(result.errors) == MAX_ERRORS


def test_all_zero_parent_means_root() -> None:
    request, scope = _request()
    _add_span(scope).parent_span_id = bytes(8)
    assert decode_traces(request.SerializeToString(), PROTOBUF).spans[0].parent_span_id == b""


def _length_delimited(field: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while n > 0x7F:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    return varint(field << 3 | 2) + varint(len(payload)) + payload


def test_pre_1_0_instrumentation_library_spans_protobuf_is_decoded() -> None:
    # Old exporters put spans in ResourceSpans field 1000, laid out like today's ScopeSpans.
    request, scope = _request(service="legacy")
    _add_span(scope)
    resource_spans = request.resource_spans[0]
    old_scope = resource_spans.scope_spans[0].SerializeToString()
    resource_spans.ClearField("scope_spans")
    body = _length_delimited(1, resource_spans.SerializeToString()
                             + _length_delimited(1000, old_scope))
    [span] = decode_traces(body, PROTOBUF).spans
    assert (span.service, span.span_id, span.name) == ("legacy", SPAN, "GET /cart")


def test_garbage_protobuf_is_a_decode_error_with_a_message() -> None:
    with pytest.raises(DecodeError, match="not a valid OTLP ExportTraceServiceRequest protobuf"):
        decode_traces(b"\xff\xff\xff\xff not protobuf", PROTOBUF)


def test_json_body_sent_as_protobuf_hints_at_the_content_type() -> None:
    with pytest.raises(DecodeError, match="application/json"):
        decode_traces(b'{"resourceSpans": []}', PROTOBUF)


def test_other_media_types_are_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType, match="application/x-protobuf"):
        decode_traces(b"", "text/plain")


def test_empty_bodies_are_empty_requests() -> None:
    assert decode_traces(b"", PROTOBUF).spans == []
    assert decode_traces(b"{}", JSON).spans == []


# --- JSON ---------------------------------------------------------------------------------------


def test_otlp_json_with_hex_ids_enum_numbers_and_int64_strings() -> None:
    result = decode_traces((TESTDATA / "otlp-json-hex.json").read_bytes(), JSON)
    assert result.rejected == 0
    client, server = result.spans
    assert (client.trace_id, client.span_id, client.parent_span_id) == (TRACE, SPAN, PARENT)
    assert client.kind == SpanKind.CLIENT and server.kind == SpanKind.SERVER
    assert client.start_ns == 1544712660000000000 and client.end_ns == 1544712661000000000
    assert server.start_ns == 1544712659000000000  # int64 as a JSON number works too
    assert client.error and client.status_message == "payment declined"
    assert not server.error and server.parent_span_id == b""
    assert client.attributes == {
        "server.address": "payment", "server.port": 8109, "retry.ratio": 0.25,
        "cache.hit": False, "tags": ["a", 2], "map": {"k": "v"}, "blob": b"\x00\x01\x02",
    }
    assert client.service == "checkout" and client.resource is server.resource
    assert client.resource["service.namespace"] == "shop"


def test_protobuf_json_mapping_with_base64_ids_enum_names_and_snake_case() -> None:
    b64 = base64.b64encode
    body = {
        "resource_spans": [{
            "resource": {"attributes": [{"key": "service.name",
                                         "value": {"string_value": "cart"}}]},
            "scope_spans": [{"spans": [{
                "trace_id": b64(TRACE).decode(),
                "span_id": b64(SPAN).decode(),
                "parent_span_id": b64(PARENT).decode(),
                "name": "HGET",
                "kind": "SPAN_KIND_CLIENT",
                "start_time_unix_nano": "10",
                "end_time_unix_nano": "15",
                "attributes": [{"key": "db.system", "value": {"string_value": "redis"}},
                               {"key": "n", "value": {"int_value": "7"}}],
                "status": {"code": "STATUS_CODE_ERROR", "message": "READONLY"},
            }]}],
        }]
    }
    [span] = decode_traces(json.dumps(body).encode(), JSON).spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, PARENT)
    assert span.kind == SpanKind.CLIENT and span.error and span.status_message == "READONLY"
    assert span.attributes == {"db.system": "redis", "n": 7}
    assert (span.service, span.start_ns, span.end_ns) == ("cart", 10, 15)


def test_tempo_batches_and_old_instrumentation_library_spans() -> None:
    span = {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "startTimeUnixNano": "1",
            "endTimeUnixNano": "2", "kind": "SPAN_KIND_SERVER"}
    body = {"batches": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "old"}}]},
        "instrumentationLibrarySpans": [{"instrumentationLibrary": {"name": "x"},
                                         "spans": [span]}],
    }]}
    [decoded] = decode_traces(json.dumps(body).encode(), JSON).spans
    assert decoded.service == "old" and decoded.kind == SpanKind.SERVER


def test_json_span_problems_are_rejections_naming_the_span() -> None:
    good = {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "startTimeUnixNano": "1",
            "endTimeUnixNano": "2"}
    bad_len = {**good, "traceId": "463ac35c9f6413ad"}  # a 64-bit Zipkin-style id
    backwards = {**good, "startTimeUnixNano": "5"}
    deep: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(MAX_VALUE_DEPTH + 1):
        deep = {"arrayValue": {"values": [deep]}}
    too_deep = {**good, "attributes": [{"key": "x", "value": deep}]}
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [bad_len, good, backwards,
                                                         too_deep]}]}]}
    result = decode_traces(json.dumps(body).encode(), JSON)
    assert len(result.spans) == 1 and result.rejected == 3
    assert result.errors[0] == (
        "resourceSpans[0].scopeSpans[0].spans[0]: trace_id must be 16 bytes, got 12 "
        "(from '463ac35c9f6413ad')"
    )
    assert "before start" in result.errors[1] and "deeper than" in result.errors[2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resourceSpans": [{"scopeSpans": [{"spans": {"traceId": "x"}}]}]},
         "JSON: resourceSpans[0].scopeSpans[0].spans: expected a list, got an object"),
        ({"resourceSpans": [{"scopeSpans": [{}, {"spans": [{}, {}, {}, {"traceId": "zz!"}]}]}]},
         "JSON: resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex characters "
         "or base64 of 16 bytes, got 'zz!'"),
        ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE.hex(),
                                                         "startTimeUnixNano": "soon"}]}]}]},
         "JSON: resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected an integer"),
        ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE.hex(),
                                                         "spanId": SPAN.hex(),
                                                         "kind": "SPAN_KIND_SIDEWAYS"}]}]}]},
         "JSON: resourceSpans[0].scopeSpans[0].spans[0].kind: expected a number or one of"),
        ({"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": {"x": 1}}]}}]},
         "JSON: resourceSpans[0].resource.attributes[0].value: unknown AnyValue field 'x'"),
        ({"spans": []}, "JSON: (top level): expected an object with \"resourceSpans\""),
        ([{"traceId": "abc"}], "Zipkin v2 JSON lists go to /api/v2/spans"),
    ],
)
def test_json_of_the_wrong_shape_is_a_decode_error_naming_the_path(body: Any,
                                                                    message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_traces(json.dumps(body).encode(), JSON)
    assert message in str(info.value)


def test_invalid_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_traces(b'{"resourceSpans": [', JSON)


# --- the official SDK as the producer ----------------------------------------------------------


def _sdk_spans() -> tuple[list[Any], bytes]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "frontend",
                                                        "service.namespace": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("conway.tests")
    with tracer.start_as_current_span("GET /", kind=trace_api.SpanKind.SERVER):
        with tracer.start_as_current_span("GET /api/cart", kind=trace_api.SpanKind.CLIENT,
                                          attributes={"server.address": "cart",
                                                      "server.port": 8106,
                                                      "retry.ratio": 0.5, "cached": False,
                                                      "items": ["a", "b"]}) as client:
            client.set_status(Status(StatusCode.ERROR, "connection refused"))
    provider.shutdown()
    finished = list(exporter.get_finished_spans())
    return finished, encode_spans(finished).SerializeToString()


def _assert_matches_sdk(sdk_spans: list[Any], records: list[Any]) -> None:
    by_id = {r.span_id: r for r in records}
    assert len(by_id) == len(sdk_spans) == 2
    for sdk in sdk_spans:
        ctx = sdk.get_span_context()
        record = by_id[ctx.span_id.to_bytes(8, "big")]
        assert record.trace_id == ctx.trace_id.to_bytes(16, "big")
        parent = sdk.parent.span_id.to_bytes(8, "big") if sdk.parent else b""
        assert record.parent_span_id == parent
        assert record.name == sdk.name and record.kind == sdk.kind.value + 1
        assert (record.start_ns, record.end_ns) == (sdk.start_time, sdk.end_time)
        assert record.error == (sdk.status.status_code == StatusCode.ERROR)
        assert record.status_message == (sdk.status.description or "")
        expected = {k: list(v) if isinstance(v, tuple) else v for k, v in sdk.attributes.items()}
        assert record.attributes == expected
        assert record.service == "frontend"
        assert record.resource == dict(sdk.resource.attributes)


def test_sdk_encoded_protobuf_decodes_with_all_fields_intact() -> None:
    sdk_spans, body = _sdk_spans()
    result = decode_traces(body, PROTOBUF)
    assert result.rejected == 0
    _assert_matches_sdk(sdk_spans, result.spans)
    client = next(r for r in result.spans if r.kind == SpanKind.CLIENT)
    assert client.error and client.attributes["items"] == ["a", "b"]


def test_sdk_spans_as_protobuf_json_mapping_decode_the_same() -> None:
    sdk_spans, body = _sdk_spans()
    as_json = json_format.MessageToJson(ExportTraceServiceRequest.FromString(body))
    assert '"SPAN_KIND_CLIENT"' in as_json  # enum names and base64 ids, as recorded traces
    result = decode_traces(as_json.encode(), JSON)
    _assert_matches_sdk(sdk_spans, result.spans)
    snake = json_format.MessageToJson(ExportTraceServiceRequest.FromString(body),
                                      preserving_proto_field_name=True)
    _assert_matches_sdk(sdk_spans, decode_traces(snake.encode(), JSON).spans)


# --- responses ----------------------------------------------------------------------------------


def test_protobuf_response_carries_partial_success_only_when_rejecting() -> None:
    ok = ExportTraceServiceResponse.FromString(encode_response(0, "", PROTOBUF))
    assert not ok.HasField("partial_success")
    partial = ExportTraceServiceResponse.FromString(encode_response(3, "bad ids", PROTOBUF))
    assert partial.partial_success.rejected_spans == 3
    assert partial.partial_success.error_message == "bad ids"


def test_json_response_follows_the_otlp_json_mapping() -> None:
    assert json.loads(encode_response(0, "", JSON)) == {}
    body = encode_response(2, "end before start", JSON)
    assert json.loads(body) == {"partialSuccess": {"rejectedSpans": "2",
                                                   "errorMessage": "end before start"}}
    parsed = json_format.Parse(body, ExportTraceServiceResponse())
    assert parsed.partial_success.rejected_spans == 2


def test_status_bodies_in_both_encodings() -> None:
    status = RpcStatus.FromString(encode_status("bad body", PROTOBUF))
    assert (status.code, status.message) == (3, "bad body")
    assert json.loads(encode_status("too big", JSON, code=8)) == {"code": 8,
                                                                   "message": "too big"}
