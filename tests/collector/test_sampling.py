"""Head-sampling weights: the OpenTelemetry tracestate threshold, a span multiplier attribute,
whole-number weights whose average is exact, and what cannot be read."""

from __future__ import annotations

import json
import os

import pytest

from collector import otlp
from collector.model import SpanKind, SpanRecord
from collector.sampling import MAX_WEIGHT, Sampling, adjusted_count, whole


@pytest.mark.parametrize(("trace_state", "count"), [
    ("", 1.0),
    ("rojo=00f067aa0ba902b7", 1.0),
    ("ot=th:0", 1.0),                       # keeps everything
    ("ot=th:8", 2.0),                       # 50 %
    ("ot=th:c", 4.0),                       # 25 %
    ("ot=th:e666666666666", 10.0),          # 10 % (rounded threshold)
    ("ot=rv:1a2b3c4d5e6f70;th:c", 4.0),     # with explicit randomness
    ("vendor=x,ot=th:8,other=y", 2.0),      # among other vendors' entries
    ("ot=rv:1a2b3c4d5e6f70", 1.0),          # no threshold: not sampled by it
])
def test_adjusted_count_from_the_threshold(trace_state: str, count: float) -> None:
    got = adjusted_count(trace_state)
    assert got == pytest.approx(count, rel=1e-6)


@pytest.mark.parametrize("bad", ["ot=th:", "ot=th:xyz", "ot=th:123456789012345"])
def test_an_unreadable_threshold_counts_once_and_is_counted(bad: str) -> None:
    assert adjusted_count(bad) is None
    sampling = Sampling()
    assert sampling.weight(span(trace_state=bad)) == 1
    assert sampling.unreadable == 1


def span(trace_state: str = "", attrs: dict[str, object] | None = None,
         trace_id: bytes | None = None) -> SpanRecord:
    return SpanRecord(trace_id or os.urandom(16), os.urandom(8), b"", "svc", "GET /",
                      int(SpanKind.SERVER), 0, 1, False, dict(attrs or {}), {}, "", trace_state)


def test_whole_weights_average_to_the_exact_count() -> None:
    ids = [os.urandom(16) for _ in range(20_000)]
    got = [whole(10 / 3, t) for t in ids]
    assert set(got) == {3, 4}
    assert sum(got) / len(got) == pytest.approx(10 / 3, rel=0.02)
    assert whole(10.0, ids[0]) == 10
    # Every span of one trace gets the same weight.
    assert len({whole(2.5, ids[1]) for _ in range(5)}) == 1


def test_span_multiplier_attribute_when_configured() -> None:
    plain = Sampling()
    assert plain.weight(span(attrs={"sampling.multiplier": 5})) == 1
    keyed = Sampling("sampling.multiplier")
    assert keyed.weight(span(attrs={"sampling.multiplier": 5})) == 5
    assert keyed.weight(span(trace_state="ot=th:8", attrs={"sampling.multiplier": 5})) == 10
    for bad in ("5", 0.5, True, float("nan")):
        assert keyed.weight(span(attrs={"sampling.multiplier": bad})) == 1
    assert keyed.unreadable == 4
    assert keyed.weight(span(attrs={"sampling.multiplier": 1e12})) == MAX_WEIGHT


def test_the_tracestate_survives_both_otlp_encodings() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    sp = rs.scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.trace_state = b"t" * 16, b"s" * 8, "ot=th:c"
    sp.start_time_unix_nano, sp.end_time_unix_nano = 1, 2
    (got,) = otlp.decode_traces(req.SerializeToString(), otlp.PROTOBUF).spans
    assert got.trace_state == "ot=th:c"
    body = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"spans": [{"traceId": "74" * 16, "spanId": "73" * 8,
                                   "traceState": "ot=th:c", "startTimeUnixNano": "1",
                                   "endTimeUnixNano": "2"}]}]}]}
    (got,) = otlp.decode_traces(json.dumps(body).encode(), otlp.JSON).spans
    assert got.trace_state == "ot=th:c"
