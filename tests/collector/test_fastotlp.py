"""The compiled OTLP protobuf fast path (collector/_fastotlp.c) against the Python decoder.

`collector._fastotlp.decode` must return exactly the spans `collector.otlp._decode_protobuf`
returns (with nothing rejected, truncated or dropped), or None: then `decode_traces` answers
with the Python decoder. Checked differentially on generated requests, reordered and shadowed
fields and byte-level mutations; on the bodies real producers send (where it must not bail);
and for each condition it bails on, against a control body it accepts.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from collector import otlp
from collector.limits import DEFAULT_LIMITS, MAX_LINKS, SpanLimits
from collector.model import Attributes, DecodeError, DecodeResult, SpanRecord
from collector.otlp import PROTOBUF, decode_traces
from collector.replay import to_otlp_request

ROOT = Path(__file__).resolve().parents[2]
fastotlp: ModuleType | None
try:
    from collector import _fastotlp as fastotlp
    MISSING = ""
except ImportError as exc:  # built only where a C compiler was available at install
    fastotlp = None
    MISSING = str(exc)

needs_fast = pytest.mark.skipif(
    fastotlp is None,
    reason=f"collector._fastotlp is not built ({MISSING}): install with a C compiler "
           f"(make setup) to test the compiled fast path")

SMALL = SpanLimits(max_attributes=3, max_value_chars=8, max_service_chars=8)
OK_TEXT, LONG_TEXT = "x" * 8, "x" * 9  # at and over SMALL's value limit
FIELDS = [f.name for f in dataclasses.fields(SpanRecord)]


# --- the two decoders and how their answers compare ---------------------------------------------


def fast(body: bytes, limits: SpanLimits = DEFAULT_LIMITS) -> list[SpanRecord] | None:
    assert fastotlp is not None
    spans: list[SpanRecord] | None = fastotlp.decode(
        body, SpanRecord, limits.max_attributes, limits.max_value_chars,
        limits.max_service_chars)
    return spans


def python(body: bytes, limits: SpanLimits = DEFAULT_LIMITS) -> DecodeResult:
    """The Python decoder alone (the fast path switched off for the call)."""
    saved = otlp._fast_decode
    otlp._fast_decode = None
    try:
        return otlp._decode_protobuf(body, limits)
    finally:
        otlp._fast_decode = saved


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, dicts in the same order, floats bit for bit (NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def sharing(spans: list[SpanRecord]) -> list[int]:
    """For each span, the index of the first span with the same resource object."""
    first: dict[int, int] = {}
    return [first.setdefault(id(s.resource), i) for i, s in enumerate(spans)]


def assert_same_spans(got: list[SpanRecord], want: list[SpanRecord]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert type(g) is SpanRecord
        for name in FIELDS:
            assert same(getattr(g, name), getattr(w, name)), (
                f"span {i}.{name}: fast {getattr(g, name)!r:.200} != "
                f"python {getattr(w, name)!r:.200}")
    assert sharing(got) == sharing(want)


def check(body: bytes, limits: SpanLimits = DEFAULT_LIMITS) -> bool:
    """The fast answer is None or exactly the Python one; True when it was not None."""
    got = fast(body, limits)
    try:
        want = python(body, limits)
    except DecodeError:
        assert got is None, "fast path accepted a body the Python decoder refuses"
        return False
    if got is None:
        return False
    assert (want.rejected, want.truncated_values, want.dropped_attributes, want.errors,
            want.reasons) == (0, 0, 0, [], {}), "fast path accepted a body with problems"
    assert_same_spans(got, want.spans)
    return True


def assert_same_results(got: DecodeResult, want: DecodeResult) -> None:
    assert_same_spans(got.spans, want.spans)
    assert (got.rejected, got.errors, got.reasons, got.truncated_values,
            got.dropped_attributes) == (want.rejected, want.errors, want.reasons,
                                        want.truncated_values, want.dropped_attributes)


# --- the wire format by hand ------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A protobuf varint; negative numbers as their 64-bit two's complement (10 bytes)."""
    return otlp._varint(value & ((1 << 64) - 1))


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(number, 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def f64(number: int, value: int) -> bytes:
    return tag(number, 1) + value.to_bytes(8, "little")


def kv(key: bytes | str, value: bytes | None) -> bytes:
    """A KeyValue; ``value`` is an encoded AnyValue, None for none."""
    return ld(1, key) + (ld(2, value) if value is not None else b"")


def text(value: bytes | str) -> bytes:
    return ld(1, value)  # AnyValue.string_value


def array(*values: bytes) -> bytes:
    return ld(5, b"".join(ld(1, v) for v in values))


def kvlist(*kvs: bytes) -> bytes:
    return ld(6, b"".join(ld(1, x) for x in kvs))


TRACE = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))
PARENT = bytes(range(11, 19))
SERVICE = ld(1, kv("service.name", text("checkout")))  # Resource with service.name


def span(*fields: bytes, trace: bytes = TRACE, span_id: bytes = SPAN_ID, start: int = 10,
         end: int = 20) -> bytes:
    """A Span: ids and times first, then ``fields`` (later occurrences win)."""
    return ld(1, trace) + ld(2, span_id) + f64(7, start) + f64(8, end) + b"".join(fields)


def request(*spans: bytes, resource: bytes | None = SERVICE, extra: bytes = b"") -> bytes:
    """One ResourceSpans with one ScopeSpans holding ``spans``; ``extra`` ends the
    ResourceSpans."""
    rs = ld(1, resource) if resource is not None else b""
    rs += ld(2, b"".join(ld(2, s) for s in spans)) + extra
    return ld(1, rs)


# --- where it must be taken -----------------------------------------------------------------


@needs_fast
def test_decode_traces_uses_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if not otlp.FAST_DECODER:
        pytest.skip(f"fast path off: {otlp.FAST_DECODER_INFO}")
    calls: list[list[SpanRecord] | None] = []
    real = otlp._fast_decode
    assert real is not None

    def spy(*args: Any) -> list[SpanRecord] | None:
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(otlp, "_fast_decode", spy)
    body = request(span(ld(5, "GET /"), vi(6, 2), ld(9, kv("k", text("v")))))
    result = decode_traces(body, PROTOBUF)
    assert len(calls) == 1 and calls[0] is not None and result.spans is calls[0]
    assert result == DecodeResult(spans=calls[0])
    assert_same_spans(result.spans, python(body).spans)


def _sdk_body() -> bytes:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({
        "service.name": "frontend", "service.namespace": "shop", "host.cores": 8,
        "deployment.canary": False, "region.weights": [0.5, 0.25]}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("conway.tests", "1.0", schema_url="https://x/schema")
    with tracer.start_as_current_span("GET /", kind=trace_api.SpanKind.SERVER,
                                      attributes={"http.route": "/"}) as root:
        root.add_event("cache miss", {"key": "user:1", "size": 3})
        with tracer.start_as_current_span(
                "GET /api/cart", kind=trace_api.SpanKind.CLIENT,
                links=[Link(root.get_span_context(), {"link.kind": "follows"})],
                attributes={"server.address": "cart", "server.port": 8106,
                            "retry.ratio": 0.5, "cached": False, "items": ["a", "b"],
                            "ports": [1, 2], "flags": [True, False]}) as client:
            client.record_exception(ValueError("connection refused ünïcode"))
            client.set_status(Status(StatusCode.ERROR, "connection refused"))
        with tracer.start_as_current_span("SELECT orders", kind=trace_api.SpanKind.CLIENT):
            pass
    provider.shutdown()
    return bytes(encode_spans(list(exporter.get_finished_spans())).SerializeToString())


def _benchlib() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conway_benchlib", ROOT / "bench/benchlib.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replayed() -> bytes:
    resource: Attributes = {"service.name": "cart", "service.version": "1.0"}
    spans = [
        SpanRecord(TRACE, SPAN_ID, b"", "cart", "GET /cart", 2, 100, 200, False,
                   {"http.route": "/cart", "http.response.status_code": 200,
                    "ratio": 0.25, "ok": True, "raw": b"\x00\xff", "none": None,
                    "list": [1, "two", [3.5]], "map": {"a": {"b": []}}, "": "empty key"},
                   resource),
        SpanRecord(TRACE, PARENT, SPAN_ID, "cart", "SELECT", 3, 120, 180, True,
                   {"db.system": "postgresql"}, resource, "deadlock"),
    ]
    return to_otlp_request(spans)


@needs_fast
@pytest.mark.parametrize("producer", ["sdk", "shop_batch", "replay"])
def test_the_fast_path_takes_real_producers_bodies(producer: str) -> None:
    if producer == "sdk":
        body = _sdk_body()
    elif producer == "shop_batch":
        body, _, _ = _benchlib().shop_batch(random.Random(7), 1, 20, 1_760_000_000_000_000_000)
    else:
        body = _replayed()
    got = fast(body)
    assert got is not None, f"the fast path bailed on a {producer} body"
    assert len(got) > 1
    assert_same_spans(got, python(body).spans)


# --- accepted: the semantics it reproduces ------------------------------------------------------

ACCEPTED = {
    "resource after its spans": ld(1, ld(3, "url") + ld(2, ld(2, span(ld(5, "n"))))
                                   + ld(1, ld(1, kv("service.name", text("late"))))),
    "span fields in any order": request(
        f64(8, 9) + ld(5, "late") + ld(2, SPAN_ID) + vi(6, 3) + ld(1, TRACE) + f64(7, 1)),
    "scalars twice: last wins": request(span(
        ld(5, "first"), ld(5, "second"), vi(6, 1), vi(6, 2), ld(4, PARENT), ld(4, b""),
        ld(15, vi(3, 2) + vi(3, 1) + ld(2, "a") + ld(2, "b")))),
    "ids twice: last wins": request(span(ld(1, b"\x00" * 3), ld(1, TRACE))),
    "repeated key overwrites in place": request(span(
        ld(9, kv("a", text("1"))), ld(9, kv("b", text("2"))), ld(9, kv("a", text("3"))))),
    "key twice: last wins": request(span(ld(9, ld(1, "x") + ld(1, "y") + ld(2, text("v"))))),
    "oneof: last member wins": request(span(
        ld(9, kv("a", vi(3, 5) + text("s"))), ld(9, kv("b", text("s") + vi(2, 1))),
        ld(9, kv("c", array(text("x")) + vi(3, 7))), ld(9, kv("d", text("") + f64(4, 0))))),
    "every value kind": request(span(
        ld(9, kv("s", text("été"))), ld(9, kv("empty", text(""))), ld(9, kv("none", None)),
        ld(9, kv("novalue", b"")), ld(9, kv("t", vi(2, 1))), ld(9, kv("f", vi(2, 0))),
        ld(9, kv("big bool", vi(2, 1 << 40))), ld(9, kv("i", vi(3, -5))),
        ld(9, kv("imax", vi(3, (1 << 63) - 1))), ld(9, kv("imin", vi(3, -(1 << 63)))),
        ld(9, kv("nan", tag(4, 1) + struct.pack("<d", math.nan))),
        ld(9, kv("negzero", tag(4, 1) + struct.pack("<d", -0.0))),
        ld(9, kv("inf", tag(4, 1) + struct.pack("<d", math.inf))),
        ld(9, kv("raw", ld(7, b"\x00\xff"))), ld(9, kv("rawempty", ld(7, b""))),
        ld(9, kv("arr", array(text("a"), vi(3, 1), b"", array()))),
        ld(9, kv("map", kvlist(kv("k", kvlist()), kv("k2", None), kv("k", text("again"))))),
        ld(9, kv("", text("empty key"))), ld(9, kv("ключ", text("日本語 🎉"))))),
    "parent of zeros is no parent": request(span(ld(4, bytes(8)))),
    "status and kinds": request(span(ld(15, vi(3, 2) + ld(2, "boom")), vi(6, 0x7FFFFFFF))),
    "unknown fields everywhere": ld(1, ld(1, SERVICE + vi(50, 1) + ld(51, b"\xff"))
                                    + ld(2, ld(2, span(vi(99, 3), tag(98, 5) + b"abcd",
                                                       f64(97, 1), ld(96, b"\xff\xfe")))
                                         + vi(60, 1))
                                    + tag(70, 5) + b"1234") + vi(5, 1) + ld(6, b"\xff"),
    "skipped fields present": request(span(
        ld(3, "rojo=00f067aa0ba902b7"), vi(10, 2), vi(12, 1), vi(14, 1), tag(16, 5) + b"\1\0\0\0",
        ld(11, f64(1, 5) + ld(2, "event") + ld(3, kv("e", array(array(array(array(
            array(text("deep in an event, not read")))))))) + vi(4, 1)),
        ld(13, ld(1, TRACE) + ld(2, SPAN_ID) + ld(3, "ts") + ld(4, kv("l", vi(3, 1)))
           + vi(5, 0) + tag(6, 5) + b"\0\0\0\0")),
        extra=ld(3, "https://opentelemetry.io/schemas/1.21.0")),
    "scope and resource extras": ld(1, ld(1, SERVICE + vi(2, 4) + ld(3, ld(1, "s") + ld(2, "t")
                                                                      + ld(3, "id") + ld(3, "i2")
                                                                      + ld(4, "d")))
                                    + ld(2, ld(1, ld(1, "lib") + ld(2, "1.0")
                                                  + ld(3, kv("scope.attr", text("x"))) + vi(4, 0))
                                         + ld(1, ld(1, "lib2")) + ld(2, span()) + ld(3, "url"))),
    "no resource, no service": request(span(), resource=None),
    "service.name not a string": request(span(), resource=ld(1, kv("service.name", vi(3, 1)))),
    "empty service.name": request(span(), resource=ld(1, kv("service.name", text("")))),
    "resource shared by its spans only": request(span(), span(ld(2, PARENT)))
                                         + request(span(ld(5, "other"))),
    "resource without spans": request() + request(span()),
    "empty request": b"",
    "overlong varints and tags": request(span(
        tag(6, 0) + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00",
        b"\xaa\x80\x80\x00" + b"\x01x")),
    "multi-byte text at the character limit": request(span(
        ld(5, "é" * 8), ld(9, kv("k", text("日本語" * 2 + "日本"))), ld(15, ld(2, "🎉" * 8)),
        ld(9, kv("k2", ld(7, OK_TEXT.encode()))), ld(9, kv("k3", text(OK_TEXT)))),
        resource=ld(1, kv("service.name", text("é" * 8)))),
}


@needs_fast
@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_and_equal(case: str) -> None:
    body = ACCEPTED[case]
    limits = SMALL if case.startswith("multi-byte") else DEFAULT_LIMITS
    got = fast(body, limits)
    assert got is not None, f"bailed on {case!r}"
    assert check(body, limits)


# --- where it bails: each case against a control it accepts --------------------------------------

_N = 4 if fastotlp is None else int(fastotlp.MAX_NESTING)


def _nested(levels: int, kvlists: bool = False) -> bytes:
    value = text("leaf")
    for _ in range(levels):
        value = kvlist(kv("k", value)) if kvlists else array(value)
    return value


def _attrs(n: int, field: int = 9) -> bytes:
    return b"".join(ld(field, kv(f"k{i}", text("v"))) for i in range(n))


BAILS: dict[str, tuple[bytes, bytes, SpanLimits]] = {
    # name: (accepted control, bailing body, limits)
    "truncated body": (request(span()), request(span())[:-1], DEFAULT_LIMITS),
    "truncated varint": (request(span()) + vi(2, 300), request(span()) + vi(2, 300)[:-1],
                         DEFAULT_LIMITS),
    "truncated length": (request(span()) + ld(5, "abcde"),
                         request(span()) + tag(5, 2) + b"\x05ab", DEFAULT_LIMITS),
    "length past the end": (request(span()), ld(1, b"")[:1] + b"\x7f" + request(span()),
                            DEFAULT_LIMITS),
    "invalid UTF-8 in the name": (request(span(ld(5, b"ok"))), request(span(ld(5, b"o\xff"))),
                                  DEFAULT_LIMITS),
    "invalid UTF-8 in a key": (request(span(ld(9, kv(b"k", None)))),
                               request(span(ld(9, kv(b"k\xc0\x80", None)))), DEFAULT_LIMITS),
    "surrogate in a value": (request(span(ld(9, kv("k", text("\u20ac".encode()))))),
                             request(span(ld(9, kv("k", text(b"\xed\xa0\x80"))))),
                             DEFAULT_LIMITS),
    "invalid UTF-8 in trace_state (not read)": (request(span(ld(3, b"a=b"))),
                                                request(span(ld(3, b"a=\xff"))),
                                                DEFAULT_LIMITS),
    "invalid UTF-8 in an event (not read)": (request(span(ld(11, ld(2, "e")))),
                                             request(span(ld(11, ld(2, b"\xe0\x80\x80")))),
                                             DEFAULT_LIMITS),
    "surrogate in trace_state (not read)": (request(span(ld(3, "\ud7ff".encode()))),
                                            request(span(ld(3, b"\xed\xb0\x80"))),
                                            DEFAULT_LIMITS),
    "event values nested past upb's depth limit (not read)": (
        request(span(ld(11, ld(3, kv("k", _nested(20)))))),
        request(span(ld(11, ld(3, kv("k", _nested(60)))))), DEFAULT_LIMITS),
    "malformed link (not read)": (request(span(ld(13, ld(1, TRACE)))),
                                  request(span(ld(13, ld(1, TRACE)[:-1]))), DEFAULT_LIMITS),
    "known field, other wire type": (request(span(ld(5, "n"))), request(span(vi(5, 1))),
                                     DEFAULT_LIMITS),
    "skipped field, other wire type": (request(span(ld(3, "a=b"))), request(span(vi(3, 1))),
                                       DEFAULT_LIMITS),
    "time as a varint": (request(span()), request(span(vi(8, 30))), DEFAULT_LIMITS),
    "group": (request(span(vi(99, 1))), request(span(tag(99, 3) + tag(99, 4))),
              DEFAULT_LIMITS),
    "wire type 7": (request(span(vi(99, 1))), request(span(tag(99, 7))), DEFAULT_LIMITS),
    "field 0": (request(span(vi(99, 1))), request(span(vi(0, 1))), DEFAULT_LIMITS),
    "legacy instrumentation_library_spans": (
        request(span()), request(span(), extra=ld(1000, ld(2, span(ld(2, PARENT))))),
        DEFAULT_LIMITS),
    "resource twice": (request(span()), request(span(), extra=ld(1, ld(1, kv("a", None)))),
                       DEFAULT_LIMITS),
    "status twice": (request(span(ld(15, vi(3, 2)))),
                     request(span(ld(15, vi(3, 2)), ld(15, ld(2, "m")))), DEFAULT_LIMITS),
    "value twice": (request(span(ld(9, kv("k", text("a"))))),
                    request(span(ld(9, kv("k", text("a")) + ld(2, vi(3, 1))))), DEFAULT_LIMITS),
    "array twice": (request(span(ld(9, kv("k", array(text("a")))))),
                    request(span(ld(9, kv("k", array(text("a")) + array(text("b")))))),
                    DEFAULT_LIMITS),
    "kvlist twice": (request(span(ld(9, kv("k", kvlist(kv("a", None)))))),
                     request(span(ld(9, kv("k", kvlist(kv("a", None)) + kvlist())))),
                     DEFAULT_LIMITS),
    "string_value_strindex": (request(span(ld(9, kv("k", vi(3, 1))))),
                              request(span(ld(9, kv("k", vi(8, 1))))), DEFAULT_LIMITS),
    "trace_id of 15 bytes": (request(span()), request(span(trace=TRACE[:15])), DEFAULT_LIMITS),
    "trace_id of zeros": (request(span()), request(span(trace=bytes(16))), DEFAULT_LIMITS),
    "no trace_id": (request(span()), request(span(trace=b"")), DEFAULT_LIMITS),
    "span_id of 9 bytes": (request(span()), request(span(span_id=SPAN_ID + b"x")),
                           DEFAULT_LIMITS),
    "span_id of zeros": (request(span()), request(span(span_id=bytes(8))), DEFAULT_LIMITS),
    "parent of 5 bytes": (request(span(ld(4, PARENT))), request(span(ld(4, PARENT[:5]))),
                          DEFAULT_LIMITS),
    "end before start": (request(span(start=5, end=5)), request(span(start=6, end=5)),
                         DEFAULT_LIMITS),
    "span attributes over the limit": (request(span(_attrs(3))), request(span(_attrs(4))),
                                       SMALL),
    "repeated keys count too": (request(span(_attrs(3))),
                                request(span(_attrs(3), ld(9, kv("k0", None)))), SMALL),
    "resource attributes over the limit": (
        request(span(), resource=_attrs(3, 1)), request(span(), resource=_attrs(4, 1)), SMALL),
    "kvlist over the limit": (
        request(span(ld(9, kv("k", kvlist(*(kv(str(i), None) for i in range(3))))))),
        request(span(ld(9, kv("k", kvlist(*(kv(str(i), None) for i in range(4))))))), SMALL),
    "array over the limit": (request(span(ld(9, kv("k", array(*[vi(3, 1)] * 3))))),
                             request(span(ld(9, kv("k", array(*[vi(3, 1)] * 4))))), SMALL),
    "string value too long": (request(span(ld(9, kv("k", text(OK_TEXT))))),
                              request(span(ld(9, kv("k", text(LONG_TEXT))))), SMALL),
    "multi-byte value too long": (request(span(ld(9, kv("k", text("é" * 8))))),
                                  request(span(ld(9, kv("k", text("é" * 9))))), SMALL),
    "resource value too long": (request(span(), resource=ld(1, kv("k", text(OK_TEXT)))),
                                request(span(), resource=ld(1, kv("k", text(LONG_TEXT)))),
                                SMALL),
    "bytes value too long": (request(span(ld(9, kv("k", ld(7, OK_TEXT.encode()))))),
                             request(span(ld(9, kv("k", ld(7, LONG_TEXT.encode()))))), SMALL),
    "name too long": (request(span(ld(5, OK_TEXT))), request(span(ld(5, LONG_TEXT))), SMALL),
    "status message too long": (request(span(ld(15, ld(2, OK_TEXT)))),
                                request(span(ld(15, ld(2, LONG_TEXT)))), SMALL),
    "service.name too long": (
        request(span(), resource=ld(1, kv("service.name", text("12345678")))),
        request(span(), resource=ld(1, kv("service.name", text("123456789")))),
        SpanLimits(max_service_chars=8)),
    "service.name too long, no spans": (
        request(resource=ld(1, kv("service.name", text("12345678")))),
        request(resource=ld(1, kv("service.name", text("123456789")))),
        SpanLimits(max_service_chars=8)),
    "values nested too deep": (request(span(ld(9, kv("k", _nested(_N))))),
                               request(span(ld(9, kv("k", _nested(_N + 1))))), DEFAULT_LIMITS),
    "values nested deeper than Python allows": (
        request(span(ld(9, kv("k", _nested(_N))))),
        request(span(ld(9, kv("k", _nested(otlp.MAX_VALUE_DEPTH + 1))))), DEFAULT_LIMITS),
    "kvlists nested deeper than Python allows": (
        request(span(ld(9, kv("k", _nested(_N, kvlists=True))))),
        request(span(ld(9, kv("k", _nested(otlp.MAX_VALUE_DEPTH + 1, kvlists=True))))),
        DEFAULT_LIMITS),
    "resource nested too deep": (request(span(), resource=ld(1, kv("k", _nested(_N)))),
                                 request(span(), resource=ld(1, kv("k", _nested(_N + 1)))),
                                 DEFAULT_LIMITS),
    "kind over int32": (request(span(vi(6, 0x7FFFFFFF))), request(span(vi(6, 0x80000000))),
                        DEFAULT_LIMITS),
    "kind wrapping to SERVER": (request(span(vi(6, 2))), request(span(vi(6, (1 << 32) + 2))),
                                DEFAULT_LIMITS),
    "negative kind": (request(span(vi(6, 1))), request(span(vi(6, -1))), DEFAULT_LIMITS),
    "status code wrapping to ERROR": (request(span(ld(15, vi(3, 2)))),
                                      request(span(ld(15, vi(3, (1 << 32) + 2)))),
                                      DEFAULT_LIMITS),
    "tag of 6 bytes": (request(span()) + b"\x90\x80\x80\x80\x00\x01",
                       request(span()) + b"\x90\x80\x80\x80\x80\x00\x01", DEFAULT_LIMITS),
    "tag over 32 bits": (request(span()), request(span()) + b"\x80\x80\x80\x80\x10\x01",
                         DEFAULT_LIMITS),
    "varint over 10 bytes": (request(span()), request(span()) + b"\x10" + b"\x80" * 10 + b"\x00",
                             DEFAULT_LIMITS),
}


@needs_fast
@pytest.mark.parametrize("case", list(BAILS))
def test_bails_and_decode_traces_answers_as_python(case: str) -> None:
    control, body, limits = BAILS[case]
    assert fast(control, limits) is not None, f"{case}: the control body is not accepted"
    assert check(control, limits)
    assert fast(body, limits) is None, f"{case}: did not bail"
    try:
        want = python(body, limits)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            decode_traces(body, PROTOBUF, limits)
        assert str(info.value) == str(exc)
        return
    assert_same_results(decode_traces(body, PROTOBUF, limits), want)


@needs_fast
def test_negative_limits_bail() -> None:
    assert fast(request(span()), SpanLimits(max_attributes=-1)) is None


# --- differential: generated requests, reordered fields, mutations ---------------------------


TEXTS = ["", "a", "GET /api/cart", "été", "日本語", "🎉 party", "nul\x00byte", "12345",
         "123456", "ééééé", "éééééé", "x" * 40]
KEYS = ["service.name", "http.route", "k", "", "ключ", "dup", "dup", "a.b.c"]


class Gen:
    """Random OTLP requests: every value kind, the limits' edges, invalid spans now and then."""

    def __init__(self, rng: random.Random, limits: SpanLimits) -> None:
        self.rng = rng
        self.limits = limits

    def text(self) -> str:
        rng = self.rng
        if rng.random() < 0.1:
            n = self.limits.max_value_chars + rng.choice([-1, 0, 1])
            return rng.choice(["x", "é", "🎉"]) * max(n, 0)
        return rng.choice(TEXTS)

    def count(self, cap: int) -> int:
        rng = self.rng
        if rng.random() < 0.1:
            return min(self.limits.max_attributes + rng.choice([0, 1]), cap)
        return rng.choice([0, 1, 1, 2, 3])

    def value(self, out: AnyValue, depth: int) -> None:
        rng = self.rng
        kinds = ["none", "str", "str", "empty", "bool", "int", "double", "bytes"]
        if depth < 9:
            kinds += ["array", "kvlist"] if depth < 2 else []
            kinds += ["deep"] if rng.random() < 0.05 else []
        kind = rng.choice(kinds)
        if kind == "str":
            out.string_value = self.text()
        elif kind == "empty":
            out.string_value = ""
        elif kind == "bool":
            out.bool_value = rng.random() < 0.5
        elif kind == "int":
            out.int_value = rng.choice([0, 1, -1, 200, (1 << 63) - 1, -(1 << 63),
                                        rng.randrange(-(1 << 63), 1 << 63)])
        elif kind == "double":
            out.double_value = rng.choice([0.0, -0.0, 0.5, math.nan, math.inf, -math.inf,
                                           1e300, rng.uniform(-1e6, 1e6)])
        elif kind == "bytes":
            out.bytes_value = rng.randbytes(rng.choice([0, 1, 8, self.limits.max_value_chars,
                                                        self.limits.max_value_chars + 1]))
        elif kind == "array":
            out.array_value.SetInParent()
            for _ in range(self.count(40)):
                self.value(out.array_value.values.add(), depth + 1)
        elif kind == "kvlist":
            out.kvlist_value.SetInParent()
            self.attributes(out.kvlist_value.values, depth + 1)
        elif kind == "deep":  # a chain of arrays around the nesting limits
            value = out
            for _ in range(rng.randrange(2, 10)):
                if rng.random() < 0.5:
                    value = value.array_value.values.add()
                else:
                    item = value.kvlist_value.values.add()
                    item.key = "k"
                    value = item.value
            value.string_value = "leaf"

    def attributes(self, out: Any, depth: int) -> None:
        for _ in range(self.count(40)):
            item: KeyValue = out.add()
            item.key = self.rng.choice(KEYS)
            if self.rng.random() < 0.9:
                self.value(item.value, depth)

    def id(self, size: int) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.03:
            return bytes(size)
        if r < 0.06:
            return rng.randbytes(rng.choice([0, size - 1, size + 1]))
        return rng.randbytes(size)

    def span(self, out: Span) -> None:
        rng = self.rng
        out.trace_id = self.id(16)
        out.span_id = self.id(8)
        out.parent_span_id = rng.choice([b"", b"", bytes(8), self.id(8)])
        if rng.random() < 0.8:
            out.name = self.text()
        kinds = [0, 1, 2, 3, 4, 5, 2, 3, 7, 0x7FFFFFFF, -1]
        out.kind = rng.choice(kinds)  # type: ignore[assignment]
        out.start_time_unix_nano = start = rng.choice([0, 10, rng.randrange(1 << 64)])
        end = start + rng.choice([0, 5, 1_000_000])
        if rng.random() < 0.05:
            end = start - 1
        out.end_time_unix_nano = max(0, min(end, (1 << 64) - 1))
        self.attributes(out.attributes, 0)
        if rng.random() < 0.5:
            out.status.code = rng.choice([0, 1, 2, 2, 5, -1])  # type: ignore[assignment]
            if rng.random() < 0.5:
                out.status.message = self.text()
        if rng.random() < 0.2:
            out.trace_state = rng.choice(["rojo=00f067aa0ba902b7", "ot=th:e666,rv:1a",
                                          self.text()])
            out.flags = 0x301
            out.dropped_attributes_count = 3
        if rng.random() < 0.2:
            event = out.events.add()
            event.name, event.time_unix_nano = self.text(), 5
            self.attributes(event.attributes, 0)
        if rng.random() < 0.1:
            link = out.links.add()
            link.trace_id, link.span_id, link.trace_state = self.id(16), self.id(8), "x=1"
            self.attributes(link.attributes, 0)
        if rng.random() < 0.1:  # unknown fields survive in the message
            out.MergeFromString(rng.choice([vi(100, 7), ld(101, b"\xff\x00"),
                                            tag(102, 5) + b"abcd", f64(103, 1)]))

    def request(self) -> bytes:
        rng = self.rng
        req = ExportTraceServiceRequest()
        for _ in range(rng.choice([1, 1, 2, 3])):
            rs = req.resource_spans.add()
            r = rng.random()
            if r < 0.7:
                item = rs.resource.attributes.add()
                item.key = "service.name"
                n = self.limits.max_service_chars + rng.choice([-1, 0, 0, 0, 1])
                item.value.string_value = rng.choice(
                    ["checkout", "", "é" * n, "s" * n])
            elif r < 0.8:
                item = rs.resource.attributes.add()
                item.key, item.value.int_value = "service.name", 1
            if rng.random() < 0.5:
                self.attributes(rs.resource.attributes, 0)
            if rng.random() < 0.1:
                rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
            for _ in range(rng.choice([0, 1, 1, 2])):
                ss = rs.scope_spans.add()
                if rng.random() < 0.5:
                    ss.scope.name, ss.scope.version = "lib", "1.0"
                for _ in range(rng.choice([0, 1, 2, 3])):
                    self.span(ss.spans.add())
        return bytes(req.SerializeToString())


def split(buf: bytes) -> list[tuple[int, int, bytes]] | None:
    """(field number, wire type, payload or raw value) of each field; None if not parseable."""
    out: list[tuple[int, int, bytes]] = []
    i = 0

    def read() -> int:
        nonlocal i
        shift = value = 0
        while True:
            if i >= len(buf) or shift > 63:
                raise ValueError
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    try:
        while i < len(buf):
            key = read()
            number, wire = key >> 3, key & 7
            start = i
            if wire == 0:
                read()
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                n = read()
                start = i
                i += n
            else:
                return None
            if i > len(buf):
                return None
            out.append((number, wire, buf[start:i]))
    except ValueError:
        return None
    return out


def remix(rng: random.Random, descriptor: Descriptor, buf: bytes) -> bytes:
    """``buf`` (a message of type ``descriptor``) with its fields shuffled (the order among one
    field's occurrences kept), sub-messages remixed, and earlier values shadowing singular
    scalar fields now and then: what any encoder may send, decoded the same by upb."""
    fields = split(buf)
    if fields is None:
        return buf
    groups: dict[int, list[bytes]] = {}
    for number, wire, payload in fields:
        fd: FieldDescriptor | None = descriptor.fields_by_number.get(number)
        if fd is not None and wire == 2 and fd.message_type is not None:
            payload = remix(rng, fd.message_type, payload)
        encoded = tag(number, wire) + (varint(len(payload)) + payload if wire == 2 else payload)
        group = groups.setdefault(number, [])
        if (fd is not None and not _is_repeated(fd) and fd.message_type is None
                and rng.random() < 0.2 and fd.name != "string_value_strindex"):
            group.append(_shadow(rng, fd))
        group.append(encoded)
    queues = list(groups.values())
    out = bytearray()
    while queues:
        queue = rng.choice(queues)
        out += queue.pop(0)
        if not queue:
            queues.remove(queue)
    return bytes(out)


def _is_repeated(fd: FieldDescriptor) -> bool:
    if hasattr(fd, "is_repeated"):
        return bool(fd.is_repeated)
    return bool(fd.label == fd.LABEL_REPEATED)


def _shadow(rng: random.Random, fd: FieldDescriptor) -> bytes:
    """An earlier occurrence of a singular scalar field, overwritten by the real one."""
    if fd.type == fd.TYPE_STRING:
        return ld(fd.number, rng.choice(["shadow", "", "é"]))
    if fd.type == fd.TYPE_BYTES:
        return ld(fd.number, rng.randbytes(rng.choice([0, 8, 16])))
    if fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FIXED64, fd.TYPE_SFIXED64):
        return tag(fd.number, 1) + rng.randbytes(8)
    if fd.type in (fd.TYPE_FLOAT, fd.TYPE_FIXED32, fd.TYPE_SFIXED32):
        return tag(fd.number, 5) + rng.randbytes(4)
    return vi(fd.number, rng.choice([0, 1, 2, 1 << 40]))


def mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.choice([1, 1, 2, 3])):
        if not data:
            break
        i = rng.randrange(len(data))
        op = rng.randrange(6)
        if op == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[i] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            del data[i:]
        elif op == 3:
            del data[i]
        elif op == 4:
            data.insert(i, rng.randrange(256))
        else:
            j = min(len(data), i + rng.randrange(1, 12))
            data[j:j] = data[i:j]
    return bytes(data)


@needs_fast
@pytest.mark.parametrize("seed", range(4))
def test_differential_generated_requests(seed: int) -> None:
    rng = random.Random(seed)
    accepted = total = 0
    for i in range(400):
        limits = SMALL if i % 3 == 0 else DEFAULT_LIMITS
        body = Gen(rng, limits).request()
        if rng.random() < 0.5:
            body = remix(rng, ExportTraceServiceRequest.DESCRIPTOR, body)
        accepted += check(body, limits)
        total += 1
    # Most generated spans are fine, so a good share of requests must take the fast path.
    assert accepted > total // 5, f"only {accepted} of {total} accepted"


@needs_fast
@pytest.mark.parametrize("seed", range(4))
def test_differential_mutated_bodies(seed: int) -> None:
    rng = random.Random(1000 + seed)
    seeds = [Gen(rng, DEFAULT_LIMITS).request() for _ in range(40)]
    seeds += [body for body, _, _ in BAILS.values()] + list(ACCEPTED.values())
    seeds = [b for b in seeds if 0 < len(b) < 3000]
    accepted = 0
    for _ in range(4000):
        body = mutate(rng, rng.choice(seeds))
        accepted += check(body, rng.choice([DEFAULT_LIMITS, SMALL]))
    assert accepted > 150, f"only {accepted} mutated bodies accepted: mutations too destructive"


# --- build, switch, schema, leaks -----------------------------------------------------------


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """CI has gcc and Python headers: there, a missing extension is a build regression."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here: the pure-Python decoder is expected")
    assert fastotlp is not None, (
        f"a C compiler ({compiler}) is available but collector._fastotlp is not built "
        f"({MISSING}); run make setup")


@needs_fast
def test_the_active_decoder_follows_conway_pure_python() -> None:
    pure = os.environ.get("CONWAY_PURE_PYTHON", "") not in ("", "0")
    assert otlp.FAST_DECODER is (not pure), otlp.FAST_DECODER_INFO
    code = "from collector import otlp; print(otlp.FAST_DECODER, otlp.FAST_DECODER_INFO)"
    for value, active in (("1", False), ("0", True), ("", True)):
        env = {**os.environ, "CONWAY_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=60).stdout
        assert out.startswith(f"{active} "), (value, out)


@needs_fast
def test_schema_covers_the_installed_messages() -> None:
    assert fastotlp is not None
    known = fastotlp.known_fields()
    assert otlp._fast_schema_problem(known) == ""
    del known["opentelemetry.proto.trace.v1.Span"][16]
    assert "Span.flags" in otlp._fast_schema_problem(known)
    known = fastotlp.known_fields()
    known["opentelemetry.proto.common.v1.KeyValue"][2] = (11, True,
                                                          "opentelemetry.proto.common.v1.AnyValue")
    assert "KeyValue.value" in otlp._fast_schema_problem(known)
    assert fastotlp.MAX_NESTING <= otlp.MAX_VALUE_DEPTH


@needs_fast
def test_no_leaks_on_accepted_and_bailing_bodies() -> None:
    bodies = [(b, DEFAULT_LIMITS) for b in ACCEPTED.values()]
    bodies += [(b, limits) for _, b, limits in BAILS.values()]
    bodies += [(_replayed(), DEFAULT_LIMITS), (_sdk_body(), DEFAULT_LIMITS)]

    def run(times: int) -> None:
        for _ in range(times):
            for body, limits in bodies:
                fast(body, limits)

    run(20)  # warm the string cache
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(300)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ~25,000 decodes: leaking even one small object each would be ~1 MB.
    assert grown < 64 * 1024, f"{grown} bytes still allocated"


def test_decode_takes_any_record_factory_and_refuses_non_buffers() -> None:
    """The stub's contract, checked where mypy cannot: decode takes any record factory."""
    if fastotlp is None:
        pytest.skip(f"collector._fastotlp is not built ({MISSING})")
    made: list[tuple[Any, ...]] = []

    def factory(*args: Any) -> int:
        made.append(args)
        return len(made)

    assert fastotlp.decode(request(span()), factory, 128, 4096, 256) == [1]
    assert len(made[0]) == 14  # SpanRecord's fields, links last
    with pytest.raises(TypeError):
        fastotlp.decode("not bytes", SpanRecord, 1, 1, 1)


def test_links_are_read_as_the_python_decoder_reads_them() -> None:
    """A batch consumer's links, on the fast path: the first MAX_LINKS kept, ids of another
    length left out, the same as the Python decoder."""
    if fastotlp is None:
        pytest.skip(f"collector._fastotlp is not built ({MISSING})")
    assert fastotlp.MAX_LINKS == MAX_LINKS
    links = [ld(13, ld(1, bytes([i % 256]) * 16) + ld(2, bytes([i % 256]) * 8)
                + ld(3, "ts")) for i in range(MAX_LINKS + 5)]
    links.insert(3, ld(13, ld(1, b"short") + ld(2, SPAN_ID)))
    body = request(span(*links))
    got = fast(body)
    assert got is not None
    (spans,) = [got]
    assert len(spans[0].links) == MAX_LINKS - 1  # 128 read, one of them malformed
    assert spans[0].links[0] == (b"\x00" * 16, b"\x00" * 8)
    assert_same_spans(got, python(body).spans)
