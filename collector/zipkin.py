"""Zipkin v2 JSON (``POST /api/v2/spans``) to `SpanRecord`s.

Mapping, as the OpenTelemetry Collector's Zipkin receiver and Zipkin itself read v2 spans:
``kind`` CLIENT/SERVER/PRODUCER/CONSUMER to the same `SpanKind`, absent to INTERNAL;
``localEndpoint.serviceName`` (lower-cased, as Zipkin stores it) is the service;
``remoteEndpoint`` becomes ``peer.service`` / ``network.peer.address`` / ``network.peer.port``;
``tags`` become attributes; an ``error`` tag, whatever its value, marks the span failed;
``timestamp``/``duration`` are microseconds.

A ``shared: true`` SERVER span reuses its CLIENT half's id (B3 single-host propagation). Pairing
keys a CLIENT by its span id and a SERVER by its parent id, so the server half gets a derived
span id and the shared id as its parent: both halves then meet on one key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from collector.limits import DEFAULT_LIMITS, SpanLimits, SpanReason, count_reason
from collector.model import Attributes, DecodeError, DecodeResult, SpanKind, SpanRecord
from collector.otlp import MAX_ERRORS, UNKNOWN_SERVICE

KINDS = {
    "CLIENT": SpanKind.CLIENT,
    "SERVER": SpanKind.SERVER,
    "PRODUCER": SpanKind.PRODUCER,
    "CONSUMER": SpanKind.CONSUMER,
}
_ZERO_ID = bytes(8)
_HEX = frozenset("0123456789abcdefABCDEF")


class _SpanProblem(Exception):
    def __init__(self, message: str, reason: str = SpanReason.INVALID_FIELD) -> None:
        super().__init__(message)
        self.reason = reason


def decode_spans(body: bytes, limits: SpanLimits = DEFAULT_LIMITS) -> DecodeResult:
    """Decode a Zipkin v2 JSON body: a list of spans (tags capped as ``limits`` says)."""
    try:
        obj = json.loads(body)
    except RecursionError as exc:
        raise DecodeError("Zipkin: body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise DecodeError(f"Zipkin: body is not valid JSON: {exc}") from exc
    return decode_span_list(obj, limits)


def decode_span_list(obj: Any, limits: SpanLimits = DEFAULT_LIMITS) -> DecodeResult:
    """Decode already-parsed Zipkin v2 JSON (a list of span objects)."""
    if not isinstance(obj, list):
        hint = " (OTLP JSON goes to /v1/traces)" if isinstance(obj, dict) else ""
        raise DecodeError(f"Zipkin: expected a JSON list of v2 spans, got "
                          f"{type(obj).__name__}{hint}")
    result = DecodeResult()
    resources: dict[str, Attributes] = {}
    for i, raw in enumerate(obj):
        if not isinstance(raw, dict):
            raise DecodeError(f"Zipkin: [{i}]: expected a span object, got {type(raw).__name__}")
        try:
            span = _span(raw, resources, limits, result)
        except _SpanProblem as exc:
            result.rejected += 1
            count_reason(result, exc.reason)
            if len(result.errors) < MAX_ERRORS:
                result.errors.append(f"[{i}]: {exc}")
            continue
        result.spans.append(span)
    return result


def _span(
    raw: dict[str, Any], resources: dict[str, Attributes], limits: SpanLimits,
    result: DecodeResult,
) -> SpanRecord:
    trace_id = _hex_id(raw.get("traceId"), "traceId", 32)
    if len(trace_id) == 8:
        trace_id = bytes(8) + trace_id  # a 64-bit trace id is the low half of 128 bits
    if trace_id == bytes(16):
        raise _SpanProblem("traceId is all zeros (invalid)", SpanReason.INVALID_ID)
    span_id = _hex_id(raw.get("id"), "id", 16)
    if span_id == _ZERO_ID:
        raise _SpanProblem("id is all zeros (invalid)", SpanReason.INVALID_ID)
    parent = b""
    if raw.get("parentId") not in (None, ""):
        parent = _hex_id(raw.get("parentId"), "parentId", 16)
        if parent == _ZERO_ID:
            parent = b""

    kind_name = raw.get("kind")
    if kind_name is None:
        kind = SpanKind.INTERNAL
    elif isinstance(kind_name, str) and kind_name.upper() in KINDS:
        kind = KINDS[kind_name.upper()]
    else:
        raise _SpanProblem(f"kind {kind_name!r:.30} is not one of {', '.join(KINDS)}")

    if kind == SpanKind.SERVER and raw.get("shared") is True:
        parent = span_id
        span_id = shared_server_span_id(trace_id, span_id)

    timestamp = raw.get("timestamp")
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool) or timestamp <= 0:
        raise _SpanProblem(f"timestamp must be epoch microseconds, got {timestamp!r:.30}")
    duration = raw.get("duration", 0)  # absent on an incomplete span: zero length
    if duration is None:
        duration = 0
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration < 0:
        raise _SpanProblem(f"duration must be microseconds >= 0, got {duration!r:.30}")
    start_ns = int(timestamp * 1000)
    end_ns = start_ns + int(duration * 1000)

    local = raw.get("localEndpoint")
    service = ""
    if isinstance(local, dict) and isinstance(local.get("serviceName"), str):
        service = local["serviceName"].lower()
    service = service or UNKNOWN_SERVICE
    if len(service) > limits.max_service_chars:
        raise _SpanProblem(f"localEndpoint.serviceName of {len(service)} characters is longer "
                           f"than {limits.max_service_chars}", SpanReason.SERVICE_NAME_TOO_LONG)
    resource = resources.get(service)
    if resource is None:
        resource = resources[service] = {"service.name": service}

    attributes: Attributes = {}
    tags = raw.get("tags")
    if tags is not None:
        if not isinstance(tags, dict):
            raise _SpanProblem(f"tags must be an object of strings, got {type(tags).__name__}")
        items = list(tags.items())
        if len(items) > limits.max_attributes:
            result.dropped_attributes += len(items) - limits.max_attributes
            items = items[:limits.max_attributes]
        cap = limits.max_value_chars
        for key, value in items:
            try:
                text = value if isinstance(value, str) else json.dumps(value)
            except RecursionError:
                raise _SpanProblem(f"tag {key!r:.40} is nested too deeply",
                                   SpanReason.TOO_DEEP) from None
            if len(text) > cap:
                text = text[:cap]
                result.truncated_values += 1
            attributes[key] = text
    error = "error" in attributes
    message = str(attributes["error"]) if error else ""
    remote = raw.get("remoteEndpoint")
    if isinstance(remote, dict):
        peer = remote.get("serviceName")
        if isinstance(peer, str) and peer:
            attributes.setdefault("peer.service", peer.lower())
        address = remote.get("ipv4") or remote.get("ipv6")
        if isinstance(address, str) and address:
            attributes.setdefault("network.peer.address", address)
        port = remote.get("port")
        if isinstance(port, int) and not isinstance(port, bool) and port > 0:
            attributes.setdefault("network.peer.port", port)
    name = raw.get("name")
    if isinstance(name, str) and len(name) > limits.max_value_chars:
        name = name[:limits.max_value_chars]
        result.truncated_values += 1
    return SpanRecord(
        trace_id,
        span_id,
        parent,
        service,
        name if isinstance(name, str) else "",
        int(kind),
        start_ns,
        end_ns,
        error,
        attributes,
        resource,
        message,
    )


def shared_server_span_id(trace_id: bytes, shared_id: bytes) -> bytes:
    """The span id given to the SERVER half of a shared span: stable, 8 bytes, never zero."""
    derived = hashlib.blake2b(trace_id + shared_id, digest_size=8, person=b"zipkin-shared").digest()
    return derived if derived != _ZERO_ID else b"\x00" * 7 + b"\x01"


def _hex_id(value: Any, field: str, max_chars: int) -> bytes:
    """Zipkin ids are lower-hex; like Zipkin, accept shorter ones and left-pad them."""
    if not isinstance(value, str) or not value:
        raise _SpanProblem(f"{field} is required (hex string), got {value!r:.40}",
                           SpanReason.INVALID_ID)
    if len(value) > max_chars or not _HEX.issuperset(value):
        raise _SpanProblem(f"{field} must be up to {max_chars} hex characters, got {value!r:.40}",
                           SpanReason.INVALID_ID)
    width = 16 if len(value) <= 16 else 32
    return bytes.fromhex(value.rjust(width, "0"))
