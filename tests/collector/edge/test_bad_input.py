"""Bad input on every receiver, one test per class: each gets a clear 4xx (or OTLP partial
success) with a message, is counted on /metrics with a reason, and the valid calls another
thread sends with the official SDK exporter at the same time are all counted."""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.rpc.status_pb2 import Status
from live_collector import (
    JSON_CT,
    PB,
    Collector,
    ValidTraffic,
    add_span,
    edge_calls,
    iter_chunks,
    metric,
    new_id,
    pairs,
    request,
    wait_for_calls,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

MAX_BODY = 200_000
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Default caps and the command line's default span time window; a small body limit and
    # body timeout keep the oversize and slow-client cases fast.
    c = Collector("--max-body-bytes", str(MAX_BODY), "--body-timeout", str(BODY_TIMEOUT_S),
                  "--pairing-ttl", "30")
    try:
        yield c.url
    finally:
        c.stop()


def refused(url: str, reason: str) -> float:
    return metric(url, "conway_requests_rejected_total", reason=reason)


def span_rejections(url: str, reason: str) -> float:
    return metric(url, "conway_spans_rejected_by_reason_total", reason=reason)


def status_message(r: httpx.Response) -> str:
    if r.headers["content-type"].startswith("application/x-protobuf"):
        return str(Status.FromString(r.content).message)
    body = r.json()
    return str(body.get("message") or body.get("error"))


def partial(r: httpx.Response) -> tuple[int, str]:
    assert r.status_code == 200, r.text
    p = ExportTraceServiceResponse.FromString(r.content).partial_success
    return int(p.rejected_spans), str(p.error_message)


def test_truncated_and_garbage_protobuf(url: str) -> None:
    before = refused(url, "malformed")
    with ValidTraffic(url, "trunc") as valid:
        whole = pairs("trunc-bad", 20)
        bodies = [whole[: len(whole) // 2], whole[:-3], b"\xff\xfe\x00garbage" * 50,
                  bytes(range(256)) * 10]
        for body in bodies:
            r = httpx.post(url + "/v1/traces", content=body, headers=PB)
            assert r.status_code == 400
            assert r.headers["content-type"] == "application/x-protobuf"
            assert "not a valid OTLP ExportTraceServiceRequest protobuf" in status_message(r)
    valid.assert_all_counted()
    assert refused(url, "malformed") - before == len(bodies)
    assert edge_calls(url, "trunc-bad-a", "trunc-bad-b") == 0


@pytest.mark.parametrize(("body", "needle"), [
    ([{"resourceSpans": []}], "expected an object with \"resourceSpans\""),
    ({"resourceSpans": "nope"}, "resourceSpans: expected a list"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]},
     "resourceSpans[0].scopeSpans[0].spans[0]: expected an object"),
    ({"spans": []}, "expected an object with \"resourceSpans\""),
], ids=["list", "string-list", "number-span", "wrong-key"])
def test_json_of_the_wrong_shape(url: str, body: Any, needle: str) -> None:
    before = refused(url, "malformed")
    with ValidTraffic(url, "shape", minimum=5) as valid:
        r = httpx.post(url + "/v1/traces", content=json.dumps(body).encode(), headers=JSON_CT)
        assert r.status_code == 400
        assert needle in r.json()["message"]
        # Zipkin's endpoint takes a list; an object is the wrong shape there.
        z = httpx.post(url + "/api/v2/spans", json={"traceId": "a" * 16})
        assert z.status_code == 400 and "expected a JSON list of v2 spans" in z.json()["error"]
    valid.assert_all_counted()
    assert refused(url, "malformed") - before == 2


def test_wrong_types_in_attributes(url: str) -> None:
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "kind": 2,
            "startTimeUnixNano": str(time.time_ns() - 1000),
            "endTimeUnixNano": str(time.time_ns()),
            "attributes": [{"key": "http.status_code", "value": {"intValue": "two hundred"}}]}
    body = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "types"}}]},
        "scopeSpans": [{"spans": [span]}]}]}
    before = refused(url, "malformed")
    zipkin_before = span_rejections(url, "invalid_field")
    with ValidTraffic(url, "types") as valid:
        r = httpx.post(url + "/v1/traces", content=json.dumps(body).encode(), headers=JSON_CT)
        assert r.status_code == 400
        assert "attributes[0].value.intValue: expected an integer" in r.json()["message"]
        # A key that is not a string is the same kind of error.
        span["attributes"] = [{"key": 5, "value": {"stringValue": "x"}}]
        r = httpx.post(url + "/v1/traces", content=json.dumps(body).encode(), headers=JSON_CT)
        assert r.status_code == 400 and "key: expected a string" in r.json()["message"]
        # Zipkin tags must be an object: that span is refused, its neighbours kept.
        now_us = time.time_ns() // 1000
        good = {"traceId": "ef" * 8, "id": "12" * 8, "kind": "SERVER", "timestamp": now_us,
                "duration": 5, "localEndpoint": {"serviceName": "types-zipkin"}}
        z = httpx.post(url + "/api/v2/spans", json=[good, {**good, "id": "34" * 8,
                                                            "tags": ["not", "an", "object"]}])
        assert z.status_code == 202
        assert z.json()["accepted"] == 1 and z.json()["rejected"] == 1
        assert "tags must be an object" in z.json()["errors"][0]
    valid.assert_all_counted()
    assert refused(url, "malformed") - before == 2
    assert span_rejections(url, "invalid_field") - zipkin_before == 1
    assert wait_for_calls(url, "user", "types-zipkin", 1) == 1


def test_invalid_ids(url: str) -> None:
    req, spans = request("ids-a", "ids-b")
    t = new_id(16)
    client = add_span(spans["ids-a"], 3, t)
    add_span(spans["ids-b"], 2, t, client.span_id)  # the one valid pair
    add_span(spans["ids-b"], 2, b"\x01" * 15)  # trace id of the wrong length
    add_span(spans["ids-b"], 2, bytes(16))  # all-zero trace id
    zero_span = add_span(spans["ids-b"], 2, new_id(16))
    zero_span.span_id = bytes(8)  # all-zero span id
    long_parent = add_span(spans["ids-b"], 2, new_id(16))
    long_parent.parent_span_id = b"\x02" * 9
    before = span_rejections(url, "invalid_id")
    with ValidTraffic(url, "idsv") as valid:
        rejected, message = partial(httpx.post(url + "/v1/traces",
                                               content=req.SerializeToString(), headers=PB))
        assert rejected == 4
        for needle in ("trace_id must be 16 bytes, got 15", "trace_id is all zeros",
                       "span_id is all zeros", "parent_span_id must be 8 bytes or empty"):
            assert needle in message
        z = httpx.post(url + "/api/v2/spans", json=[{"traceId": "0" * 32, "id": "1" * 16,
                                                     "timestamp": time.time_ns() // 1000}])
        assert z.status_code == 400 and "traceId is all zeros" in z.json()["error"]
    valid.assert_all_counted()
    assert span_rejections(url, "invalid_id") - before == 5
    assert wait_for_calls(url, "ids-a", "ids-b", 1) == 1


def test_span_ending_before_it_starts(url: str) -> None:
    req, spans = request("backwards")
    now = time.time_ns()
    add_span(spans["backwards"], 2, new_id(16), start_ns=now, duration_ns=-1_000_000)
    before = span_rejections(url, "end_before_start")
    with ValidTraffic(url, "backv") as valid:
        rejected, message = partial(httpx.post(url + "/v1/traces",
                                               content=req.SerializeToString(), headers=PB))
        assert rejected == 1
        assert f"end_time_unix_nano {now - 1_000_000} is before start_time_unix_nano" in message
    valid.assert_all_counted()
    assert span_rejections(url, "end_before_start") - before == 1


def test_timestamps_outside_the_acceptance_window(url: str) -> None:
    day_ns = 86_400 * 10**9
    now = time.time_ns()
    req, spans = request("clock")
    add_span(spans["clock"], 2, new_id(16), start_ns=1_000_000_000)  # 1970
    add_span(spans["clock"], 2, new_id(16), start_ns=now + 2 * day_ns)  # two days ahead
    add_span(spans["clock"], 2, new_id(16), start_ns=now - 2 * day_ns)  # two days behind
    add_span(spans["clock"], 2, new_id(16), start_ns=now - 3600 * 10**9)  # an hour ago: fine
    before = span_rejections(url, "timestamp_out_of_window")
    with ValidTraffic(url, "clockv") as valid:
        rejected, message = partial(httpx.post(url + "/v1/traces",
                                               content=req.SerializeToString(), headers=PB))
        assert rejected == 3
        assert "more than 86400 s from the collector clock" in message
        assert "fix the sender's clock" in message
        z = httpx.post(url + "/api/v2/spans", json=[{
            "traceId": "9" * 32, "id": "8" * 16, "kind": "SERVER", "timestamp": 1_000,
            "localEndpoint": {"serviceName": "clock-zipkin"}}])
        assert z.status_code == 400 and "from the collector clock" in z.json()["error"]
    valid.assert_all_counted()
    assert span_rejections(url, "timestamp_out_of_window") - before == 4
    assert wait_for_calls(url, "user", "clock", 1) == 1


def test_huge_attribute_values_and_counts(url: str) -> None:
    req, spans = request("huge-a", "huge-b")
    t = new_id(16)
    client = add_span(spans["huge-a"], 3, t)
    for i in range(1000):  # the cap is 128: 872 are dropped
        kv = client.attributes.add()
        kv.key, kv.value.string_value = f"k{i}", "v"
    server = add_span(spans["huge-b"], 2, t, client.span_id)
    kv = server.attributes.add()
    kv.key, kv.value.string_value = "http.request.body", "x" * 100_000  # cut to 4096
    server.name = "n" * 10_000  # cut to 4096
    # A service name of 300 characters is an identity that cannot be cut: rejected.
    long_req, long_spans = request("s" * 300)
    add_span(long_spans["s" * 300], 2, new_id(16))
    truncated = metric(url, "conway_attribute_values_truncated_total")
    dropped = metric(url, "conway_attributes_dropped_total")
    too_long = span_rejections(url, "service_name_too_long")
    with ValidTraffic(url, "hugev") as valid:
        r = httpx.post(url + "/v1/traces", content=req.SerializeToString(), headers=PB)
        assert partial(r) == (0, "")
        rejected, message = partial(httpx.post(url + "/v1/traces",
                                               content=long_req.SerializeToString(),
                                               headers=PB))
        assert rejected == 1
        assert "service.name of 300 characters is longer than 256" in message
    valid.assert_all_counted()
    assert wait_for_calls(url, "huge-a", "huge-b", 1) == 1  # trimmed, kept, counted
    assert metric(url, "conway_attributes_dropped_total") - dropped == 872
    assert metric(url, "conway_attribute_values_truncated_total") - truncated == 2
    assert span_rejections(url, "service_name_too_long") - too_long == 1
    nodes = {n["id"] for n in httpx.get(url + "/api/graph").json()["nodes"]}
    assert "s" * 300 not in nodes


def _nested_json(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


def test_deeply_nested_values(url: str) -> None:
    # 20 levels of arrays in a protobuf attribute: that span is rejected, its pair partner kept.
    req, spans = request("deep-a", "deep-b")
    t = new_id(16)
    client = add_span(spans["deep-a"], 3, t)
    add_span(spans["deep-b"], 2, t, client.span_id)
    deep = add_span(spans["deep-b"], 2, new_id(16))
    kv = deep.attributes.add()
    kv.key = "deep"
    value = kv.value
    for _ in range(20):
        value = value.array_value.values.add()
    value.string_value = "leaf"
    before = span_rejections(url, "value_too_deep")
    malformed = refused(url, "malformed")
    with ValidTraffic(url, "deepv") as valid:
        rejected, message = partial(httpx.post(url + "/v1/traces",
                                               content=req.SerializeToString(), headers=PB))
        assert rejected == 1 and "nested deeper than 8 levels" in message
        # JSON nested past the parser's recursion limit: the whole body is refused.
        body = b'{"resourceSpans": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        r = httpx.post(url + "/v1/traces", content=body, headers=JSON_CT)
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"]
        # Nested OTLP JSON values: the span is rejected, as in protobuf.
        span = {"traceId": "ab" * 16, "spanId": "ef" * 8, "kind": 2,
                "startTimeUnixNano": str(time.time_ns() - 1000),
                "endTimeUnixNano": str(time.time_ns()),
                "attributes": [{"key": "deep", "value": _nested_json(30)}]}
        doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
        r = httpx.post(url + "/v1/traces", content=json.dumps(doc).encode(), headers=JSON_CT)
        assert r.status_code == 200
        assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    valid.assert_all_counted()
    assert span_rejections(url, "value_too_deep") - before == 2
    assert refused(url, "malformed") - malformed == 1
    assert wait_for_calls(url, "deep-a", "deep-b", 1) == 1


def test_unknown_media_types(url: str) -> None:
    before = refused(url, "unsupported_media_type")
    encoding = refused(url, "unsupported_encoding")
    with ValidTraffic(url, "mediav") as valid:
        for ctype in ("text/plain", "application/xml", "multipart/form-data; boundary=x"):
            r = httpx.post(url + "/v1/traces", content=b"x", headers={"Content-Type": ctype})
            assert r.status_code == 415
            assert "send application/x-protobuf or application/json" in r.json()["message"]
        r = httpx.post(url + "/v1/traces", content=b"x")  # no Content-Type at all
        assert r.status_code == 415 and "'(none)'" in r.json()["message"]
        z = httpx.post(url + "/api/v2/spans", content=b"x",
                       headers={"Content-Type": "application/x-thrift"})
        assert z.status_code == 415 and "Zipkin v2 JSON" in z.json()["error"]
        r = httpx.post(url + "/v1/traces", content=b"x", headers={**PB, "Content-Encoding": "br"})
        assert r.status_code == 415 and "'br' is not supported" in status_message(r)
    valid.assert_all_counted()
    assert refused(url, "unsupported_media_type") - before == 5
    assert refused(url, "unsupported_encoding") - encoding == 1


def test_gzip_bomb_is_limited_after_decompression(url: str) -> None:
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024), compresslevel=9)  # 50 MiB in ~50 KiB
    assert len(bomb) < MAX_BODY
    before = refused(url, "body_too_large")
    with ValidTraffic(url, "bombv") as valid:
        r = httpx.post(url + "/v1/traces", content=bomb, headers={**PB, "Content-Encoding": "gzip"})
        assert r.status_code == 413
        assert f"gzip body inflating to more than {MAX_BODY} bytes" in status_message(r)
        z = httpx.post(url + "/api/v2/spans", content=bomb,
                       headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert z.status_code == 413 and "inflating" in z.json()["error"]
    valid.assert_all_counted()
    assert refused(url, "body_too_large") - before == 2


def test_oversize_bodies(url: str) -> None:
    body = b"\x00" * (MAX_BODY + 1)
    before = refused(url, "body_too_large")
    with ValidTraffic(url, "bigv") as valid:
        r = httpx.post(url + "/v1/traces", content=body, headers=PB)
        assert r.status_code == 413 and f"limit of {MAX_BODY} bytes" in status_message(r)
        # Chunked, with no Content-Length: refused as soon as it passes the limit.
        r = httpx.post(url + "/v1/traces", content=iter_chunks(body, 10_000), headers=PB)
        assert r.status_code == 413
        z = httpx.post(url + "/api/v2/spans", content=body,
                       headers={"Content-Type": "application/json"})
        assert z.status_code == 413 and "limit" in z.json()["error"]
    valid.assert_all_counted()
    assert refused(url, "body_too_large") - before == 3


def test_slow_client_gets_408_and_a_closed_connection(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    before = refused(url, "body_timeout")
    with ValidTraffic(url, "slowv") as valid:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 1000\r\n\r\n{\"resourceSpans\"")
            answer = b""
            # Trickle a byte now and then, well under the declared length: the collector
            # gives up after --body-timeout and closes (recv returns b"").
            s.settimeout(0.3)
            while True:
                try:
                    s.sendall(b" ")
                except OSError:
                    pass  # closed by the collector while we were still trickling
                try:
                    piece = s.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not piece:
                    break
                answer += piece
    valid.assert_all_counted()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in head.lower()
    assert b"content-type: application/json" in head.lower()
    message = json.loads(body)["message"]
    assert f"request body not received within {BODY_TIMEOUT_S:g} s" in message
    assert refused(url, "body_timeout") - before == 1


def test_zipkin_with_some_bad_spans_is_a_partial_success(url: str) -> None:
    now_us = time.time_ns() // 1000
    good = {"traceId": "5" * 32, "id": "6" * 16, "kind": "SERVER", "timestamp": now_us,
            "duration": 10, "localEndpoint": {"serviceName": "zk-partial"}}
    with ValidTraffic(url, "zkv", minimum=5) as valid:
        z = httpx.post(url + "/api/v2/spans", json=[
            good, {**good, "id": "xyz"}, {**good, "id": "7" * 16, "duration": -5}])
        assert z.status_code == 202
        body = z.json()
        assert body["accepted"] == 1 and body["rejected"] == 2
        assert any("id must be up to 16 hex characters" in e for e in body["errors"])
        assert any("duration must be microseconds >= 0" in e for e in body["errors"])
    valid.assert_all_counted()
    assert wait_for_calls(url, "user", "zk-partial", 1) == 1
