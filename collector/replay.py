"""Recorded traces in, span records out: for tests, benchmarks and large-graph demos.

`load_reference` reads each format found in the shared reference traces (Tempo protobuf-JSON,
OpenTelemetry Collector golden OTLP YAML, Zipkin v2 JSON, Jaeger JSON traces and Jaeger
dependency lists); `dependencies_to_spans` turns a dependency list into paired CLIENT/SERVER
spans; `to_otlp_request` encodes records back into an OTLP protobuf body to POST.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from collector.model import Attributes, AttrValue, DecodeError, DecodeResult, SpanKind, SpanRecord
from collector.otlp import STATUS_CODE_ERROR, UNKNOWN_SERVICE, decode_traces_json
from collector.zipkin import decode_span_list

JAEGER_KINDS = {
    "client": SpanKind.CLIENT,
    "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}
# Durations given to replayed dependency calls: the server half nests inside the client half.
DEPENDENCY_CLIENT_NS = 10_000_000
DEPENDENCY_SERVER_NS = 8_000_000


def load_reference(path: Path, *, now_ns: int | None = None) -> list[SpanRecord]:
    """All spans of a recorded trace file, whatever its format (detected from its content).

    A Jaeger dependency list is replayed with `dependencies_to_spans` (one call per edge,
    ending at ``now_ns``, default now). Raises `DecodeError` for a file that is not a trace
    or holds any span that cannot be read: a reference must load completely.
    """
    try:
        return _load(path, now_ns)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from None


def _load(path: Path, now_ns: int | None) -> list[SpanRecord]:
    text = path.read_bytes()
    if path.suffix in (".yaml", ".yml"):
        # BaseLoader keeps every scalar a string: a hex id like 1234 stays "1234", not an int.
        obj: Any = yaml.load(text, Loader=yaml.BaseLoader)
    else:
        obj = json.loads(text)
    if isinstance(obj, dict) and any(k in obj for k in ("resourceSpans", "resource_spans",
                                                          "batches")):
        result = decode_traces_json(obj)
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict) and "child" in obj[0]:
        return dependencies_to_spans(obj, time.time_ns() if now_ns is None else now_ns)
    elif isinstance(obj, list):
        result = decode_span_list(obj)
    elif isinstance(obj, dict) and isinstance(obj.get("data"), list):
        result = _jaeger_traces(obj["data"])
    elif isinstance(obj, dict) and "spans" in obj and "processes" in obj:
        result = _jaeger_traces([obj])
    else:
        keys = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise DecodeError(f"not a trace file this loader knows (top level: {keys}); expected "
                          f"OTLP JSON/YAML, Zipkin v2, Jaeger JSON or a dependency list")
    if result.rejected:
        raise DecodeError(f"{result.rejected} spans could not be read: "
                          f"{'; '.join(result.errors)}")
    return result.spans


# --- Jaeger JSON --------------------------------------------------------------------------------


def _jaeger_traces(traces: list[Any]) -> DecodeResult:
    result = DecodeResult()
    for ti, trace in enumerate(traces):
        if not isinstance(trace, dict) or not isinstance(trace.get("spans"), list):
            raise DecodeError(f"Jaeger: data[{ti}]: expected a trace object with \"spans\"")
        processes: dict[str, tuple[str, Attributes]] = {}
        for pid, process in (trace.get("processes") or {}).items():
            resource = _jaeger_tags(process.get("tags") or [])
            service = str(process.get("serviceName") or UNKNOWN_SERVICE)
            resource["service.name"] = service
            processes[pid] = (service, resource)
        for si, raw in enumerate(trace["spans"]):
            try:
                result.spans.append(_jaeger_span(raw, processes))
            except (KeyError, TypeError, ValueError) as exc:
                result.rejected += 1
                result.errors.append(f"data[{ti}].spans[{si}]: {exc!r}")
    return result


def _jaeger_span(raw: dict[str, Any], processes: dict[str, tuple[str, Attributes]]) -> SpanRecord:
    trace_text = str(raw["traceID"])
    trace_id = _jaeger_id(trace_text, 16)
    span_id = _jaeger_id(str(raw["spanID"]), 8)
    parent = b""
    refs = raw.get("references") or []
    # CHILD_OF is the parent; a FOLLOWS_FROM link (producer -> consumer) stands in without one.
    for ref_type in ("CHILD_OF", "FOLLOWS_FROM"):
        for ref in refs:
            if ref.get("refType") == ref_type and str(ref.get("traceID")) == trace_text:
                parent = _jaeger_id(str(ref["spanID"]), 8)
                break
        if parent:
            break
    if not parent and raw.get("parentSpanID"):
        parent = _jaeger_id(str(raw["parentSpanID"]), 8)
    service, resource = processes.get(raw.get("processID", ""), (UNKNOWN_SERVICE, {}))
    if not resource and isinstance(raw.get("process"), dict):
        service = str(raw["process"].get("serviceName") or UNKNOWN_SERVICE)
        resource = {**_jaeger_tags(raw["process"].get("tags") or []), "service.name": service}
    attributes = _jaeger_tags(raw.get("tags") or [])
    kind = JAEGER_KINDS.get(str(attributes.pop("span.kind", "internal")).lower(),
                            SpanKind.INTERNAL)
    error_tag = attributes.pop("error", False)
    error = (str(error_tag).lower() == "true"
             or str(attributes.get("otel.status_code", "")).upper() == "ERROR")
    message = str(attributes.get("otel.status_description", ""))
    start_ns = int(raw["startTime"]) * 1000
    end_ns = start_ns + int(raw.get("duration", 0)) * 1000
    return SpanRecord(trace_id, span_id, parent, service, str(raw.get("operationName", "")),
                      int(kind), start_ns, end_ns, error, attributes, resource, message)


def _jaeger_tags(tags: list[dict[str, Any]]) -> Attributes:
    attributes: Attributes = {}
    for tag in tags:
        value: AttrValue = tag.get("value")
        kind = str(tag.get("type", "string")).lower()
        if kind == "bool":
            value = value is True or str(value).lower() == "true"
        elif kind == "int64":
            value = int(str(value))
        elif kind == "float64":
            value = float(str(value))
        attributes[str(tag["key"])] = value
    return attributes


def _jaeger_id(text: str, size: int) -> bytes:
    """Hex ids are Jaeger's; test data also uses names ("span-1"), hashed to a stable id."""
    if len(text) <= size * 2:
        try:
            return bytes.fromhex(text.rjust(size * 2, "0"))
        except ValueError:
            pass
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


# --- dependency lists ---------------------------------------------------------------------------


def dependencies_to_spans(
    deps: list[dict[str, Any]], now_ns: int, calls_per_edge: int = 1,
    team_of: Callable[[str], str | None] | None = None,
) -> list[SpanRecord]:
    """Paired CLIENT/SERVER spans for each ``{parent, child, callCount}`` edge.

    Each call is its own trace: the CLIENT span (in ``parent``) is the root, the SERVER span (in
    ``child``) its child, both ending by ``now_ns``. ``callCount`` is not replayed (the large
    sample's 3 million calls would be needless work); ``calls_per_edge`` sets the volume.
    ``team_of`` names a service's team, sent as the ``team`` resource attribute (a sample
    with no owners then spreads over teams as a real organisation's would).
    """
    resources: dict[str, Attributes] = {}

    def resource(service: str) -> Attributes:
        found = resources.get(service)
        if found is None:
            found = resources[service] = {"service.name": service}
            team = team_of(service) if team_of is not None else None
            if team is not None:
                found["team"] = team
        return found

    spans: list[SpanRecord] = []
    client_start = now_ns - DEPENDENCY_CLIENT_NS
    server_start = client_start + (DEPENDENCY_CLIENT_NS - DEPENDENCY_SERVER_NS) // 2
    n = 0
    for i, dep in enumerate(deps):
        parent_name = dep.get("parent") if isinstance(dep, dict) else None
        child_name = dep.get("child") if isinstance(dep, dict) else None
        if not isinstance(parent_name, str) or not isinstance(child_name, str):
            raise ValueError(f"dependencies[{i}]: expected string \"parent\" and \"child\", "
                             f"got {dep!r:.80}")
        for _ in range(calls_per_edge):
            n += 1
            trace_id = n.to_bytes(16, "big")
            client_id = (2 * n).to_bytes(8, "big")
            server_id = (2 * n + 1).to_bytes(8, "big")
            spans.append(SpanRecord(trace_id, client_id, b"", parent_name, f"call {child_name}",
                                    int(SpanKind.CLIENT), client_start, now_ns, False,
                                    {"peer.service": child_name}, resource(parent_name)))
            spans.append(SpanRecord(trace_id, server_id, client_id, child_name, "handle",
                                    int(SpanKind.SERVER), server_start,
                                    server_start + DEPENDENCY_SERVER_NS, False, {},
                                    resource(child_name)))
    return spans


# --- OTLP encoding ------------------------------------------------------------------------------


def to_otlp_request(spans: Sequence[SpanRecord]) -> bytes:
    """An ``ExportTraceServiceRequest`` protobuf body holding ``spans``, one resource each.

    Spans sharing a resource dict (as decoders produce them) share one ``ResourceSpans``; the
    span's ``service`` is written as ``service.name`` if its resource lacks it.
    """
    request = ExportTraceServiceRequest()
    groups: dict[tuple[int, str], ResourceSpans] = {}
    for span in spans:
        key = (id(span.resource), span.service)
        rs = groups.get(key)
        if rs is None:
            rs = groups[key] = request.resource_spans.add()
            resource = dict(span.resource)
            if resource.get("service.name") != span.service:
                resource["service.name"] = span.service
            _fill_attributes(rs.resource.attributes, resource)
            rs.scope_spans.add().scope.name = "conway.replay"
        out = rs.scope_spans[0].spans.add()
        out.trace_id = span.trace_id
        out.span_id = span.span_id
        out.parent_span_id = span.parent_span_id
        out.name = span.name
        out.kind = span.kind
        out.start_time_unix_nano = span.start_ns
        out.end_time_unix_nano = span.end_ns
        _fill_attributes(out.attributes, span.attributes)
        if span.error:  # OTLP carries a status message only with ERROR
            out.status.code = STATUS_CODE_ERROR
            out.status.message = span.status_message
    return request.SerializeToString()


def _fill_attributes(target: Any, attributes: Attributes) -> None:
    for key, value in attributes.items():
        kv: KeyValue = target.add()
        kv.key = key
        _fill_value(kv.value, value)


def _fill_value(out: AnyValue, value: AttrValue) -> None:
    if value is None:
        return
    if isinstance(value, bool):  # before int: bool is an int
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, list):
        array = out.array_value
        array.SetInParent()
        for item in value:
            _fill_value(array.values.add(), item)
    elif isinstance(value, dict):
        out.kvlist_value.SetInParent()
        _fill_attributes(out.kvlist_value.values, value)
    else:
        raise TypeError(f"attribute value of type {type(value).__name__} has no OTLP encoding")
