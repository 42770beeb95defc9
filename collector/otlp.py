"""OTLP/HTTP trace bodies to `SpanRecord`s, and the responses OTLP/HTTP clients expect.

Two encodings of ``ExportTraceServiceRequest`` are decoded: binary protobuf and JSON. JSON is
read both as OTLP/JSON (hex ids, enum numbers, int64 as strings) and as the generic protobuf
JSON mapping that recorded traces use (base64 ids, enum names, snake_case keys), including the
``TracesData`` file form and Tempo's ``{"batches": [...]}``. Spans sent by pre-1.0 exporters
(``instrumentationLibrarySpans``, protobuf field 1000) are read in both encodings.

A body that cannot be read as a whole raises `DecodeError` (answer 400). A span that is present
but unusable (bad ids, end before start, attribute values nested deeper than
`MAX_VALUE_DEPTH`) is counted in `DecodeResult.rejected`, its reason kept (at most
`MAX_ERRORS`), and the rest of the body is still decoded: OTLP partial success.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from collector.limits import DEFAULT_LIMITS, MAX_LINKS, SpanLimits, SpanReason, count_reason
from collector.model import Attributes, AttrValue, DecodeError, DecodeResult, SpanRecord
from collector.wire import UnsupportedMediaType

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SUPPORTED_MEDIA = (PROTOBUF, JSON)

# What the OpenTelemetry SDKs report when no service.name is configured.
UNKNOWN_SERVICE = "unknown_service"
# Attribute values nested deeper than this (arrays/kvlists in arrays...) reject their span:
# nothing downstream reads such values, and the bound keeps conversion cheap and recursion-safe.
MAX_VALUE_DEPTH = 8
# Reasons kept per request; the count in `rejected` stays exact beyond this.
MAX_ERRORS = 10
_Text = TypeVar("_Text", str, bytes)

STATUS_CODE_ERROR = 2
_LEGACY_SCOPE_SPANS_FIELD = 1000  # ResourceSpans.instrumentation_library_spans before OTLP 1.0
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)

SPAN_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
STATUS_CODE_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


# The compiled fast path (collector/_fastotlp.c): it decodes common protobuf bodies straight
# into `SpanRecord`s, exactly as `_decode_protobuf` would, and returns None for anything else
# (malformed, limits hit, spans to reject, ...), which then takes the Python path below. Off when
# the extension is not built (no C compiler at install) or CONWAY_PURE_PYTHON is set (not "0").
_FastDecode = Callable[[bytes, type[SpanRecord], int, int, int], "list[SpanRecord] | None"]


def _fast_schema_problem(known: dict[str, dict[int, tuple[int, bool, str | None]]]) -> str:
    """A field of the installed OTLP messages the compiled decoder does not know ("" if none):
    it would skip such a field unchecked where upb parses (and may refuse) it."""
    pending = [ExportTraceServiceRequest.DESCRIPTOR]
    seen: set[str] = set()
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        fields = known.get(message.full_name, {})
        for field in message.fields:
            sub = field.message_type
            repeated = (field.is_repeated if hasattr(field, "is_repeated")
                        else field.label == field.LABEL_REPEATED)
            if fields.get(field.number) != (field.type, bool(repeated),
                                            sub.full_name if sub is not None else None):
                return f"{message.full_name}.{field.name} (field {field.number})"
            if sub is not None:
                pending.append(sub)
    return ""


def _load_fast_decoder() -> tuple[_FastDecode | None, str]:
    if os.environ.get("CONWAY_PURE_PYTHON", "") not in ("", "0"):
        return None, "pure Python (CONWAY_PURE_PYTHON is set)"
    try:
        from collector import _fastotlp
    except ImportError as exc:
        return None, f"pure Python (collector._fastotlp is not built: {exc})"
    problem = _fast_schema_problem(_fastotlp.known_fields())
    if problem:
        return None, f"pure Python (collector._fastotlp does not know {problem})"
    return _fastotlp.decode, "compiled (collector._fastotlp)"


_fast_decode, FAST_DECODER_INFO = _load_fast_decoder()
# Whether protobuf bodies go through the compiled fast path; FAST_DECODER_INFO says why (not).
FAST_DECODER: bool = _fast_decode is not None


class _SpanProblem(Exception):
    """A problem confined to one span (or one resource's spans): counted, not fatal."""

    def __init__(self, message: str, reason: str = SpanReason.TOO_DEEP) -> None:
        super().__init__(message)
        self.reason = reason


class _Malformed(Exception):
    """The JSON body does not have the OTLP shape at ``path``: the whole request is rejected."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"JSON: {path}: {problem}")


def decode_traces(body: bytes, media: str, limits: SpanLimits = DEFAULT_LIMITS) -> DecodeResult:
    """Decode an OTLP/HTTP ``/v1/traces`` body sent with the bare media type ``media``.

    ``limits`` caps attributes and value sizes (`collector.limits`); what they trim is counted
    in the result's ``truncated_values`` / ``dropped_attributes``.
    """
    if media == PROTOBUF:
        return _decode_protobuf(body, limits)
    if media == JSON:
        try:
            obj = json.loads(body)
        except RecursionError as exc:
            raise DecodeError("body is not valid JSON: nested too deeply") from exc
        except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
            raise DecodeError(f"body is not valid JSON: {exc}") from exc
        return decode_traces_json(obj, limits)
    raise UnsupportedMediaType(
        f"Content-Type {media or '(none)'!r} is not supported for OTLP traces; send "
        f"{PROTOBUF} or {JSON} (OTLP/HTTP)"
    )


# --- protobuf ---------------------------------------------------------------------------------


def _decode_protobuf(body: bytes, limits: SpanLimits = DEFAULT_LIMITS) -> DecodeResult:
    if _fast_decode is not None:
        fast = _fast_decode(body, SpanRecord, limits.max_attributes, limits.max_value_chars,
                            limits.max_service_chars)
        if fast is not None:
            return DecodeResult(spans=fast)
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            f"body is not a valid OTLP ExportTraceServiceRequest protobuf: {exc}; "
            f"if it is JSON, send Content-Type: {JSON}"
        ) from exc
    result = DecodeResult()
    spans = result.spans
    append = spans.append
    max_attrs = limits.max_attributes
    max_chars = limits.max_value_chars
    truncated = 0
    dropped_attrs = 0
    for ri, rs in enumerate(request.resource_spans):
        all_scope_spans: Sequence[ScopeSpans] = rs.scope_spans
        if not all_scope_spans:
            all_scope_spans = _legacy_scope_spans(rs)
        try:
            resource = _pb_attributes(rs.resource.attributes, 0, limits, result)
        except _SpanProblem as exc:
            count = sum(len(ss.spans) for ss in all_scope_spans)
            _reject(result, SpanReason.TOO_DEEP,
                    f"resource_spans[{ri}].resource: {exc}; its {count} spans rejected", count)
            continue
        service = resource.get("service.name")
        if not isinstance(service, str) or not service:
            service = UNKNOWN_SERVICE
        elif len(service) > limits.max_service_chars:
            count = sum(len(ss.spans) for ss in all_scope_spans)
            _reject(result, SpanReason.SERVICE_NAME_TOO_LONG,
                    f"resource_spans[{ri}].resource: service.name of {len(service)} characters "
                    f"is longer than {limits.max_service_chars}; its {count} spans rejected",
                    count)
            continue
        for si, ss in enumerate(all_scope_spans):
            for i, sp in enumerate(ss.spans):
                trace_id = sp.trace_id
                span_id = sp.span_id
                parent = sp.parent_span_id
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or end < start
                    or trace_id == _ZERO_TRACE_ID
                    or span_id == _ZERO_SPAN_ID
                    or (parent and len(parent) != 8)
                ):
                    reason, problem = _span_problem(trace_id, span_id, parent, start, end)
                    _reject(result, reason,
                            f"resource_spans[{ri}].scope_spans[{si}].spans[{i}]: {problem}")
                    continue
                if parent == _ZERO_SPAN_ID:
                    parent = b""  # some exporters write zeros for "no parent"
                # The attribute loop is inlined: it runs ~6 times per span on the hot path.
                attributes: Attributes = {}
                kvs: Sequence[KeyValue] = sp.attributes
                if len(kvs) > max_attrs:
                    dropped_attrs += len(kvs) - max_attrs
                    kvs = kvs[:max_attrs]
                try:
                    for kv in kvs:
                        value = kv.value
                        text = value.string_value
                        if text:
                            if len(text) > max_chars:
                                text = text[:max_chars]
                                truncated += 1
                            attributes[kv.key] = text
                            continue
                        which = value.WhichOneof("value")
                        if which is None:
                            attributes[kv.key] = None
                        elif which == "array_value" or which == "kvlist_value":
                            attributes[kv.key] = _pb_value(value, 0, limits, result)
                        elif which == "bytes_value":
                            attributes[kv.key] = _cut(value.bytes_value, limits, result)
                        else:
                            attributes[kv.key] = getattr(value, which)
                except _SpanProblem as exc:
                    _reject(result, SpanReason.TOO_DEEP,
                            f"resource_spans[{ri}].scope_spans[{si}].spans[{i}]: {exc}")
                    continue
                status = sp.status
                name = sp.name
                if len(name) > max_chars:
                    name = name[:max_chars]
                    truncated += 1
                message = status.message
                if message and len(message) > max_chars:
                    message = message[:max_chars]
                    truncated += 1
                trace_state = sp.trace_state
                if trace_state and len(trace_state) > max_chars:
                    trace_state = trace_state[:max_chars]
                    truncated += 1
                links: tuple[tuple[bytes, bytes], ...] = ()
                if sp.links:
                    links = tuple((ln.trace_id, ln.span_id) for ln in sp.links[:MAX_LINKS]
                                  if len(ln.trace_id) == 16 and len(ln.span_id) == 8)
                append(
                    SpanRecord(
                        trace_id,
                        span_id,
                        parent,
                        service,
                        name,
                        sp.kind,
                        start,
                        end,
                        status.code == STATUS_CODE_ERROR,
                        attributes,
                        resource,
                        message,
                        trace_state,
                        links,
                    )
                )
    result.truncated_values += truncated
    result.dropped_attributes += dropped_attrs
    return result


def _legacy_scope_spans(rs: ResourceSpans) -> list[ScopeSpans]:
    """Spans a pre-1.0 exporter sent as ``instrumentation_library_spans`` (field 1000).

    That message has the same field numbers and types as ``ScopeSpans``, so its bytes parse as
    one; current schemas only reserve the number, which leaves it among the unknown fields.
    """
    legacy: list[ScopeSpans] = []
    for field in UnknownFieldSet(rs):
        if field.field_number == _LEGACY_SCOPE_SPANS_FIELD and field.wire_type == 2:
            try:
                legacy.append(ScopeSpans.FromString(field.data))
            except ProtobufDecodeError as exc:
                raise DecodeError(
                    f"body is not a valid OTLP ExportTraceServiceRequest protobuf: "
                    f"instrumentation_library_spans: {exc}"
                ) from exc
    return legacy


def _pb_attributes(
    kvs: Sequence[KeyValue], depth: int, limits: SpanLimits, result: DecodeResult
) -> Attributes:
    if len(kvs) > limits.max_attributes:
        result.dropped_attributes += len(kvs) - limits.max_attributes
        kvs = kvs[:limits.max_attributes]
    return {kv.key: _pb_value(kv.value, depth, limits, result) for kv in kvs}


def _pb_value(value: AnyValue, depth: int, limits: SpanLimits, result: DecodeResult) -> AttrValue:
    which = value.WhichOneof("value")
    if which == "array_value":
        _check_depth(depth)
        items: Sequence[AnyValue] = value.array_value.values
        if len(items) > limits.max_attributes:
            result.dropped_attributes += len(items) - limits.max_attributes
            items = items[:limits.max_attributes]
        return [_pb_value(v, depth + 1, limits, result) for v in items]
    if which == "kvlist_value":
        _check_depth(depth)
        return _pb_attributes(value.kvlist_value.values, depth + 1, limits, result)
    if which is None:
        return None
    found: AttrValue = getattr(value, which)
    if isinstance(found, str):
        return _cut(found, limits, result)
    if isinstance(found, bytes):
        return _cut(found, limits, result)
    return found


def _cut(value: _Text, limits: SpanLimits, result: DecodeResult) -> _Text:
    """``value`` truncated to ``limits.max_value_chars`` (counted when it was longer)."""
    if len(value) <= limits.max_value_chars:
        return value
    result.truncated_values += 1
    return value[:limits.max_value_chars]


def _check_depth(depth: int) -> None:
    if depth >= MAX_VALUE_DEPTH:
        raise _SpanProblem(
            f"attribute value nested deeper than {MAX_VALUE_DEPTH} levels of arrays/kvlists"
        )


def _span_problem(
    trace_id: bytes, span_id: bytes, parent: bytes, start: int, end: int
) -> tuple[str, str]:
    """(reason, message) for a span whose ids or times are invalid."""
    if len(trace_id) != 16:
        return SpanReason.INVALID_ID, f"trace_id must be 16 bytes, got {len(trace_id)}"
    if trace_id == _ZERO_TRACE_ID:
        return SpanReason.INVALID_ID, "trace_id is all zeros (invalid)"
    if len(span_id) != 8:
        return SpanReason.INVALID_ID, f"span_id must be 8 bytes, got {len(span_id)}"
    if span_id == _ZERO_SPAN_ID:
        return SpanReason.INVALID_ID, "span_id is all zeros (invalid)"
    if parent and len(parent) != 8:
        return SpanReason.INVALID_ID, (
            f"parent_span_id must be 8 bytes or empty, got {len(parent)}")
    if end < start:
        return SpanReason.END_BEFORE_START, (
            f"end_time_unix_nano {end} is before start_time_unix_nano {start}")
    return SpanReason.INVALID_FIELD, "invalid span"


def _reject(result: DecodeResult, reason: str, message: str, count: int = 1) -> None:
    result.rejected += count
    count_reason(result, reason, count)
    _note(result.errors, message)


def _note(errors: list[str], reason: str) -> None:
    if len(errors) < MAX_ERRORS:
        errors.append(reason)


# --- JSON ---------------------------------------------------------------------------------------


def decode_traces_json(obj: Any, limits: SpanLimits = DEFAULT_LIMITS) -> DecodeResult:
    """Decode an already-parsed JSON (or YAML) ``ExportTraceServiceRequest``/``TracesData``."""
    try:
        return _decode_json(obj, limits)
    except _Malformed as exc:
        raise DecodeError(str(exc)) from None


def _decode_json(obj: Any, limits: SpanLimits) -> DecodeResult:
    if not isinstance(obj, dict):
        hint = " (Zipkin v2 JSON lists go to /api/v2/spans)" if isinstance(obj, list) else ""
        raise _Malformed("(top level)", f"expected an object with \"resourceSpans\", got "
                         f"{_type_name(obj)}{hint}")
    key, resource_spans = _pick(obj, "resourceSpans", "resource_spans", "batches")
    if key not in obj:
        if obj:
            raise _Malformed("(top level)", f"expected an object with \"resourceSpans\", got "
                             f"keys {sorted(obj)[:5]}")
        return DecodeResult()
    result = DecodeResult()
    for ri, rs in enumerate(_list(resource_spans, key)):
        rpath = f"{key}[{ri}]"
        _object(rs, rpath)
        rkey, resource = _pick(rs, "resource")
        resource_attrs: Attributes = {}
        if resource is not None:
            _object(resource, f"{rpath}.resource")
            akey, raw_attrs = _pick(resource, "attributes")
            spath = f"{rpath}.resource.{akey}"
            try:
                resource_attrs = _json_attributes(raw_attrs, spath, 0, limits, result)
            except _SpanProblem as exc:
                count = _count_json_spans(rs)
                _reject(result, exc.reason, f"{spath}: {exc}; its {count} spans rejected",
                        count)
                continue
        service = resource_attrs.get("service.name")
        if not isinstance(service, str) or not service:
            service = UNKNOWN_SERVICE
        elif len(service) > limits.max_service_chars:
            count = _count_json_spans(rs)
            _reject(result, SpanReason.SERVICE_NAME_TOO_LONG,
                    f"{rpath}.resource: service.name of {len(service)} characters is longer "
                    f"than {limits.max_service_chars}; its {count} spans rejected", count)
            continue
        skey, scope_spans = _json_scope_spans(rs)
        for si, ss in enumerate(_list(scope_spans, f"{rpath}.{skey}")):
            sspath = f"{rpath}.{skey}[{si}]"
            _object(ss, sspath)
            _, raw_spans = _pick(ss, "spans")
            for i, raw in enumerate(_list(raw_spans, f"{sspath}.spans")):
                path = f"{sspath}.spans[{i}]"
                try:
                    span = _json_span(raw, path, service, resource_attrs, limits, result)
                except _SpanProblem as exc:
                    _reject(result, exc.reason, f"{path}: {exc}")
                    continue
                result.spans.append(span)
    return result


def _json_span(
    raw: Any, path: str, service: str, resource: Attributes, limits: SpanLimits,
    result: DecodeResult,
) -> SpanRecord:
    _object(raw, path)
    trace_id = _json_id(raw, path, 16, "traceId", "trace_id")
    span_id = _json_id(raw, path, 8, "spanId", "span_id")
    parent = _json_id(raw, path, 8, "parentSpanId", "parent_span_id")
    start = _json_int(raw, path, "startTimeUnixNano", "start_time_unix_nano")
    end = _json_int(raw, path, "endTimeUnixNano", "end_time_unix_nano")
    if (
        len(trace_id) != 16
        or len(span_id) != 8
        or end < start
        or trace_id == _ZERO_TRACE_ID
        or span_id == _ZERO_SPAN_ID
        or (parent and len(parent) != 8)
    ):
        reason, problem = _span_problem(trace_id, span_id, parent, start, end)
        field = problem.split(" ", 1)[0]  # say which text the bytes came from
        raw_id = {"trace_id": ("traceId", "trace_id"), "span_id": ("spanId", "span_id"),
                  "parent_span_id": ("parentSpanId", "parent_span_id")}.get(field)
        if raw_id is not None:
            problem += f" (from {_pick(raw, *raw_id)[1]!r:.60})"
        raise _SpanProblem(problem, reason)
    if parent == _ZERO_SPAN_ID:
        parent = b""
    nkey, name = _pick(raw, "name")
    if name is None:
        name = ""
    elif not isinstance(name, str):
        raise _Malformed(f"{path}.{nkey}", f"expected a string, got {_type_name(name)}")
    kkey, kind_raw = _pick(raw, "kind")
    kind = _json_enum(kind_raw, SPAN_KIND_NAMES, f"{path}.{kkey}")
    error = False
    message = ""
    stkey, status = _pick(raw, "status")
    if status is not None:
        _object(status, f"{path}.{stkey}")
        ckey, code = _pick(status, "code")
        error = _json_enum(code, STATUS_CODE_NAMES, f"{path}.{stkey}.{ckey}") == STATUS_CODE_ERROR
        mkey, msg = _pick(status, "message")
        if msg is not None:
            if not isinstance(msg, str):
                raise _Malformed(f"{path}.{stkey}.{mkey}", f"expected a string, got "
                                 f"{_type_name(msg)}")
            message = _cut(msg, limits, result)
    akey, raw_attrs = _pick(raw, "attributes")
    attributes = _json_attributes(raw_attrs, f"{path}.{akey}", 0, limits, result)
    name = _cut(name, limits, result)
    tkey, trace_state = _pick(raw, "traceState", "trace_state")
    if trace_state is None:
        trace_state = ""
    elif not isinstance(trace_state, str):
        raise _Malformed(f"{path}.{tkey}", f"expected a string, got {_type_name(trace_state)}")
    lkey, raw_links = _pick(raw, "links")
    links: list[tuple[bytes, bytes]] = []
    for li, raw_link in enumerate(_list(raw_links, f"{path}.{lkey}")[:MAX_LINKS]):
        where = f"{path}.{lkey}[{li}]"
        _object(raw_link, where)
        link = (_json_id(raw_link, where, 16, "traceId", "trace_id"),
                _json_id(raw_link, where, 8, "spanId", "span_id"))
        if len(link[0]) == 16 and len(link[1]) == 8:
            links.append(link)
    return SpanRecord(trace_id, span_id, parent, service, name, kind, start, end, error,
                      attributes, resource, message, _cut(trace_state, limits, result),
                      tuple(links))


def _json_attributes(
    raw: Any, path: str, depth: int, limits: SpanLimits, result: DecodeResult
) -> Attributes:
    attributes: Attributes = {}
    kvs = _list(raw, path)
    if len(kvs) > limits.max_attributes:
        result.dropped_attributes += len(kvs) - limits.max_attributes
        kvs = kvs[:limits.max_attributes]
    for i, kv in enumerate(kvs):
        kvpath = f"{path}[{i}]"
        _object(kv, kvpath)
        key = kv.get("key")
        if not isinstance(key, str):
            raise _Malformed(f"{kvpath}.key", f"expected a string, got {_type_name(key)}")
        attributes[key] = _json_value(kv.get("value"), f"{kvpath}.value", depth, limits, result)
    return attributes


def _json_value(
    raw: Any, path: str, depth: int, limits: SpanLimits, result: DecodeResult
) -> AttrValue:
    if raw is None:
        return None
    _object(raw, path)
    if not raw:
        return None
    key, value = next(iter(raw.items()))
    if key in ("stringValue", "string_value"):
        if not isinstance(value, str):
            raise _Malformed(f"{path}.{key}", f"expected a string, got {_type_name(value)}")
        return _cut(value, limits, result)
    if key in ("intValue", "int_value"):
        return _to_int(value, f"{path}.{key}")
    if key in ("boolValue", "bool_value"):
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):  # YAML read without type resolution
            return value == "true"
        raise _Malformed(f"{path}.{key}", f"expected true or false, got {value!r:.40}")
    if key in ("doubleValue", "double_value"):
        return _to_float(value, f"{path}.{key}")
    if key in ("bytesValue", "bytes_value"):
        if not isinstance(value, str):
            raise _Malformed(f"{path}.{key}", f"expected base64, got {_type_name(value)}")
        try:
            return _cut(base64.b64decode(value, validate=True), limits, result)
        except binascii.Error as exc:
            raise _Malformed(f"{path}.{key}", f"expected base64: {exc}") from None
    if key in ("arrayValue", "array_value"):
        _check_depth(depth)
        _object(value, f"{path}.{key}")
        items = _list(value.get("values"), f"{path}.{key}.values")
        if len(items) > limits.max_attributes:
            result.dropped_attributes += len(items) - limits.max_attributes
            items = items[:limits.max_attributes]
        return [_json_value(v, f"{path}.{key}.values[{i}]", depth + 1, limits, result)
                for i, v in enumerate(items)]
    if key in ("kvlistValue", "kvlist_value"):
        _check_depth(depth)
        _object(value, f"{path}.{key}")
        return _json_attributes(value.get("values"), f"{path}.{key}.values", depth + 1, limits,
                                result)
    raise _Malformed(path, f"unknown AnyValue field {key!r}; expected one of stringValue, "
                     f"intValue, doubleValue, boolValue, arrayValue, kvlistValue, bytesValue")


def _json_id(raw: dict[str, Any], path: str, size: int, *names: str) -> bytes:
    key, value = _pick(raw, *names)
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise _Malformed(f"{path}.{key}", f"expected a string id, got {_type_name(value)}")
    decoded = parse_id(value, size)
    if decoded is None:
        raise _Malformed(f"{path}.{key}", f"expected {size * 2} hex characters or base64 of "
                         f"{size} bytes, got {value!r:.60}")
    return decoded


def parse_id(text: str, size: int) -> bytes | None:
    """Bytes of a hex or base64 id meant to be ``size`` bytes long, or None if neither.

    Exactly ``2 * size`` hex characters is hex (OTLP/JSON); otherwise strict base64 (protobuf
    JSON mapping, ``ceil(size / 3) * 4`` characters); otherwise any even-length hex. A result of
    the wrong length is returned as is, for the caller to reject the span with a precise reason.
    """
    if len(text) == size * 2:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _json_int(raw: dict[str, Any], path: str, *names: str) -> int:
    key, value = _pick(raw, *names)
    if value is None:
        return 0
    return _to_int(value, f"{path}.{key}")


def _to_int(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            pass
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Malformed(path, f"expected an integer (number or decimal string), got {value!r:.40}")


def _to_float(value: Any, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            result = float(value)  # the JSON mapping writes "NaN", "Infinity" as strings
        except ValueError:
            pass
        else:
            if math.isfinite(result) or value in ("NaN", "Infinity", "-Infinity"):
                return result
    raise _Malformed(path, f"expected a number, got {value!r:.40}")


def _json_enum(value: Any, names: dict[str, int], path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in names:
            return names[value]
        if value.isdigit():  # YAML read without type resolution
            return int(value)
    raise _Malformed(path, f"expected a number or one of {', '.join(names)}, got {value!r:.40}")


def _pick(obj: dict[str, Any], *names: str) -> tuple[str, Any]:
    """The first of ``names`` present in ``obj`` (its name, for error paths) and its value."""
    for name in names:
        if name in obj:
            return name, obj[name]
    return names[0], None


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(path, f"expected a list, got {_type_name(value)}")
    return value


def _object(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _Malformed(path, f"expected an object, got {_type_name(value)}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _json_scope_spans(rs: dict[str, Any]) -> tuple[str, Any]:
    key, scope_spans = _pick(rs, "scopeSpans", "scope_spans")
    if not scope_spans:  # pre-1.0 exporters; as in protobuf, read only when the new one is empty
        old_key, old = _pick(rs, "instrumentationLibrarySpans", "instrumentation_library_spans")
        if old:
            return old_key, old
    return key, scope_spans


def _count_json_spans(rs: dict[str, Any]) -> int:
    _, scope_spans = _json_scope_spans(rs)
    if not isinstance(scope_spans, list):
        return 0
    return sum(len(ss.get("spans") or []) for ss in scope_spans if isinstance(ss, dict))


# --- responses ----------------------------------------------------------------------------------


def encode_response(rejected: int, message: str, media: str) -> bytes:
    """An ``ExportTraceServiceResponse`` body, with ``partial_success`` when spans were rejected
    or there is a message (with no rejected spans, OTLP reads the message as a warning).

    JSON when ``media`` is `JSON`, protobuf otherwise. In JSON, ``rejectedSpans`` is an int64
    and so written as a decimal string, as the protobuf JSON mapping does.
    """
    if media == JSON:
        if rejected <= 0 and not message:
            return b"{}"
        body = {"partialSuccess": {"rejectedSpans": str(max(rejected, 0)),
                                   "errorMessage": message}}
        return json.dumps(body).encode()
    response = ExportTraceServiceResponse()
    if rejected > 0 or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response.SerializeToString()


def encode_status(message: str, media: str, code: int = 3) -> bytes:
    """A ``google.rpc.Status`` body for a 4xx/5xx answer (code 3 = INVALID_ARGUMENT)."""
    if media == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    try:
        from google.rpc.status_pb2 import Status
    except ImportError:  # googleapis-common-protos absent: the two fields are easy by hand
        return _encode_status_by_hand(message, code)
    return Status(code=code, message=message).SerializeToString()


def _encode_status_by_hand(message: str, code: int) -> bytes:
    text = message.encode()
    out = bytearray()
    if code:
        out += b"\x08" + _varint(code & 0xFFFFFFFFFFFFFFFF)
    if text:
        out += b"\x12" + _varint(len(text)) + text
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
