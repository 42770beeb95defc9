"""The collector over HTTP: a real `python -m collector` process on a free loopback port."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from procs import REPO, start_collector, stop
from prometheus_client.parser import text_string_to_metric_families

from collector.model import SpanKind, SpanRecord

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def collector() -> Iterator[str]:
    # The spans built below are timed in 1970: accept any time (the default window is 1 day).
    proc, url = start_collector("--max-body-bytes", str(MAX_BODY), "--pairing-ttl", "0.2",
                                "--span-time-window", "0")
    try:
        yield url
    finally:
        stop(proc)


# -- request builders ------------------------------------------------------------------------

def trace_id(n: int, salt: str = "") -> bytes:
    """Trace ids unique per ``salt`` (a test's prefix): the tests share one collector, which
    drops a span it has seen lately (same trace and span id) as re-sent."""
    return ((zlib.crc32(salt.encode()) << 64) | n).to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def pb_pair(prefix: str, n: int, server_error: bool = False) -> bytes:
    """A protobuf request with n client/server pairs `{prefix}-a -> {prefix}-b`."""
    req = ExportTraceServiceRequest()
    client_rs = req.resource_spans.add()
    kv = client_rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", f"{prefix}-a"
    server_rs = req.resource_spans.add()
    kv = server_rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", f"{prefix}-b"
    cs, ss = client_rs.scope_spans.add(), server_rs.scope_spans.add()
    for i in range(n):
        c = cs.spans.add()
        c.trace_id, c.span_id, c.parent_span_id = (trace_id(i + 1, prefix), span_id(2 * i + 2),
                                                   span_id(1))
        c.name, c.kind = "GET", 3
        c.start_time_unix_nano, c.end_time_unix_nano = 1_000_000_000, 1_020_000_000
        s = ss.spans.add()
        s.trace_id, s.span_id, s.parent_span_id = (trace_id(i + 1, prefix), span_id(2 * i + 3),
                                                   c.span_id)
        s.name, s.kind = "GET /", 2
        s.start_time_unix_nano, s.end_time_unix_nano = 1_002_000_000, 1_012_000_000
        if server_error and i % 2 == 0:
            s.status.code = 2
    return req.SerializeToString()


def json_pair(prefix: str, hex_ids: bool) -> bytes:
    import base64

    def enc(b: bytes) -> str:
        return b.hex() if hex_ids else base64.b64encode(b).decode()

    def rs(service: str, span: Any) -> Any:
        return {"resource": {"attributes": [{"key": "service.name",
                                             "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": [span]}]}

    t, c, s = trace_id(77, prefix), span_id(10), span_id(11)
    client = {"traceId": enc(t), "spanId": enc(c), "parentSpanId": enc(span_id(9)),
              "name": "call", "kind": 3 if hex_ids else "SPAN_KIND_CLIENT",
              "startTimeUnixNano": "1000000000", "endTimeUnixNano": "1030000000",
              "status": {"code": 2}}
    server = {"traceId": enc(t), "spanId": enc(s), "parentSpanId": enc(c), "name": "handle",
              "kind": 2 if hex_ids else "SPAN_KIND_SERVER",
              "startTimeUnixNano": "1001000000", "endTimeUnixNano": "1020000000"}
    return json.dumps({"resourceSpans": [rs(f"{prefix}-a", client),
                                         rs(f"{prefix}-b", server)]}).encode()


def graph(url: str, window: float = 60) -> Any:
    r = httpx.get(f"{url}/api/graph", params={"window": window})
    assert r.status_code == 200
    return r.json()


def edge(url: str, source: str, target: str) -> Any:
    edges = graph(url)["edges"]
    assert isinstance(edges, list)
    return next((e for e in edges if e["source"] == source and e["target"] == target), None)


PB = {"Content-Type": "application/x-protobuf"}


# -- tests -----------------------------------------------------------------------------------

def test_protobuf_reaches_the_graph(collector: str) -> None:
    r = httpx.post(f"{collector}/v1/traces", content=pb_pair("pb", 10, server_error=True),
                   headers=PB)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    e = edge(collector, "pb-a", "pb-b")
    assert e is not None
    assert e["calls"] == 10 and e["errors"] == 5 and e["server_errors"] == 5
    assert e["error_ratio"] == pytest.approx(0.5)
    assert e["p95_ms"] == pytest.approx(20.0, rel=0.02)
    g = graph(collector)
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["pb-b"]["kind"] == "service" and nodes["pb-b"]["calls"] == 10
    for key in ("id", "kind", "team", "health", "rate_rps", "error_ratio", "p50_ms", "p95_ms",
                "p99_ms"):
        assert key in nodes["pb-b"]
    assert set(g) >= {"window_s", "generated_at", "nodes", "edges"}


@pytest.mark.parametrize("hex_ids", [True, False], ids=["hex-ids", "base64-ids"])
def test_json_both_id_encodings(collector: str, hex_ids: bool) -> None:
    prefix = "jsonhex" if hex_ids else "jsonb64"
    r = httpx.post(f"{collector}/v1/traces", content=json_pair(prefix, hex_ids),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    e = edge(collector, f"{prefix}-a", f"{prefix}-b")
    assert e is not None and e["calls"] == 1 and e["client_errors"] == 1
    assert e["client_only_errors"] == 1


def test_gzip_and_chunked(collector: str) -> None:
    r = httpx.post(f"{collector}/v1/traces", content=gzip.compress(pb_pair("gz", 3)),
                   headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 200
    body = pb_pair("chunk", 4)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i:i + 100]

    r = httpx.post(f"{collector}/v1/traces", content=chunks(), headers=PB)
    assert r.status_code == 200
    assert edge(collector, "gz-a", "gz-b")["calls"] == 3
    assert edge(collector, "chunk-a", "chunk-b")["calls"] == 4


def test_zipkin_json(collector: str) -> None:
    spans = [
        {"traceId": "00000000000000000000000000000abc", "id": "000000000000000a",
         "parentId": "0000000000000001", "kind": "CLIENT", "name": "get",
         "timestamp": 1_000_000, "duration": 5000, "localEndpoint": {"serviceName": "zk-a"}},
        {"traceId": "00000000000000000000000000000abc", "id": "000000000000000b",
         "parentId": "000000000000000a", "kind": "SERVER", "name": "get",
         "timestamp": 1_001_000, "duration": 3000, "localEndpoint": {"serviceName": "zk-b"}},
    ]
    r = httpx.post(f"{collector}/api/v2/spans", json=spans)
    assert r.status_code == 202
    assert edge(collector, "zk-a", "zk-b") is not None


def test_virtual_nodes_over_http(collector: str) -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "vn-shop"
    spans = rs.scope_spans.add().spans
    root = spans.add()
    root.trace_id, root.span_id, root.kind = trace_id(5, "vn"), span_id(1), 2
    root.start_time_unix_nano, root.end_time_unix_nano = 1, 2_000_000
    for i, (key, value) in enumerate([("db.system", "postgresql"), ("peer.service", "vn-bank"),
                                      ("messaging.system", "vn-kafka")]):
        s = spans.add()
        s.trace_id, s.span_id, s.parent_span_id = trace_id(5, "vn"), span_id(10 + i), span_id(1)
        s.kind = 4 if key == "messaging.system" else 3
        s.start_time_unix_nano, s.end_time_unix_nano = 1, 1_000_000
        for k, v in ((key, value), ("db.namespace", "vn-orders")) if i == 0 else ((key, value),):
            a = s.attributes.add()
            a.key, a.value.string_value = k, v
    assert httpx.post(f"{collector}/v1/traces", content=req.SerializeToString(),
                      headers=PB).status_code == 200
    deadline = time.monotonic() + 10
    while edge(collector, "vn-shop", "vn-kafka") is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the collector's own periodic expiry (TTL 0.2 s here) turns them
    g = graph(collector)
    by_pair = {(e["source"], e["target"]): e for e in g["edges"]}
    assert by_pair[("user", "vn-shop")]["connection_type"] == "virtual_node"
    assert by_pair[("vn-shop", "vn-orders")]["connection_type"] == "database"
    assert by_pair[("vn-shop", "vn-bank")]["connection_type"] == "virtual_node"
    assert by_pair[("vn-shop", "vn-kafka")]["connection_type"] == "messaging_system"
    kinds = {n["id"]: n["kind"] for n in g["nodes"]}
    assert kinds["vn-orders"] == kinds["vn-bank"] == kinds["user"] == "virtual"


def test_errors_have_messages(collector: str) -> None:
    r = httpx.post(f"{collector}/v1/traces", content=b"\xff\xff\xff not protobuf", headers=PB)
    assert r.status_code == 400
    from google.rpc.status_pb2 import Status

    assert "protobuf" in Status.FromString(r.content).message
    r = httpx.post(f"{collector}/v1/traces", content=b"{not json",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    r = httpx.post(f"{collector}/v1/traces", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/x-protobuf" in r.json()["message"]
    r = httpx.post(f"{collector}/v1/traces", content=b"x" * (MAX_BODY + 1), headers=PB)
    assert r.status_code == 413
    assert str(MAX_BODY) in Status.FromString(r.content).message

    def big() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 1000 + 2):
            yield b"x" * 1000

    r = httpx.post(f"{collector}/v1/traces", content=big(), headers=PB)
    assert r.status_code == 413
    r = httpx.post(f"{collector}/v1/traces", content=b"abc",
                   headers={**PB, "Content-Encoding": "br"})
    assert r.status_code == 415 and "br" in Status.FromString(r.content).message
    r = httpx.post(f"{collector}/v1/traces", content=b"not gzip",
                   headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 400


@pytest.mark.parametrize("window", ["0", "901", "abc", "nan"])
def test_graph_window_validation(collector: str, window: str) -> None:
    r = httpx.get(f"{collector}/api/graph", params={"window": window})
    assert r.status_code == 400
    assert "between 1 and 900" in r.json()["error"]


def test_service_api(collector: str) -> None:
    httpx.post(f"{collector}/v1/traces", content=pb_pair("svc", 6), headers=PB)
    r = httpx.get(f"{collector}/api/services/svc-b", params={"window": 120})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "svc-b" and body["kind"] == "service"
    assert [c["service"] for c in body["callers"]] == ["svc-a"]
    assert body["callees"] == []
    assert sum(p["rate_rps"] for p in body["series"]) > 0
    assert set(body) >= {"team", "health", "rate_rps", "error_ratio", "p50_ms", "p95_ms",
                         "p99_ms", "up", "series", "versions", "owner"}
    r = httpx.get(f"{collector}/api/services/no-such-service")
    assert r.status_code == 404 and "no-such-service" in r.json()["error"]


def test_metrics_exposition(collector: str) -> None:
    httpx.post(f"{collector}/v1/traces", content=pb_pair("met", 7, server_error=True),
               headers=PB)
    text = httpx.get(f"{collector}/metrics").text
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    labels = (("client", "met-a"), ("connection_type", ""), ("server", "met-b"))
    assert samples[("traces_service_graph_request_total", labels)] == 7
    assert samples[("traces_service_graph_request_failed_total", labels)] == 4
    assert samples[("traces_service_graph_request_server_seconds_count", labels)] == 7
    assert samples[("traces_service_graph_request_client_seconds_bucket",
                    tuple(sorted((*labels, ("le", "0.1")))))] == 7
    assert samples[("traces_service_graph_request_client_seconds_sum", labels)] == \
        pytest.approx(7 * 0.02)
    assert samples[("conway_spans_received_total", ())] >= 14
    for name in ("conway_spans_rejected_total", "conway_pairing_paired_total",
                 "conway_pairing_expired_total", "conway_pairing_dropped_total",
                 "conway_pairing_unpaired_total"):
        assert (name, ()) in samples
    assert samples[("conway_http_requests_total",
                    (("path", "/v1/traces"), ("status", "200")))] >= 1


def test_bad_cli_arguments_exit_with_a_message(tmp_path: Path) -> None:
    bad_topology = tmp_path / "topo.yaml"
    bad_topology.write_text("services:\n  cart: {port: nope}\n")
    for args, needle in (
        (["--scrape", "not-a-url"], "not an http(s) URL"),
        (["--topology", str(bad_topology)], "port must be an integer"),
        (["--retention", "-5"], "positive"),
        (["--catalog", str(tmp_path / "missing.yaml")], "does not exist"),
        (["--diagnosis", "trace_quiet"], "expected OPTION=SECONDS"),
        (["--diagnosis", "nope=1"], "unknown diagnosis option"),
        (["--diagnosis", "trace_quiet_s=-1"], ">= 0"),
        (["--scrape-host-template", "a:b"], "bare host name"),
    ):
        r = subprocess.run([sys.executable, "-m", "collector", *args], cwd=REPO,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert needle in r.stderr, r.stderr


def test_sigterm_shuts_down_cleanly() -> None:
    proc, _ = start_collector()
    try:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None and b"listening on" in proc.stdout.read()
    finally:
        stop(proc)


# -- golden files: spans -> /api/graph JSON, with a fixed clock ------------------------------

GOLDEN = Path(__file__).parent / "testdata" / "golden"
T0 = 1_800_000_000.0


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shop_spans() -> list[SpanRecord]:
    """A small demo shop: user -> frontend -> {cart -> redis, checkout -> {payment, orders}},
    with server errors on payment, a client-only error and an external peer."""
    resources: dict[str, dict[str, Any]] = {}
    out: list[SpanRecord] = []
    n = 0

    def res(service: str) -> dict[str, Any]:
        return resources.setdefault(service, {"service.name": service,
                                              "service.version": "1.0.0"})

    def add(service: str, kind: SpanKind, parent: bytes, ms: float, error: bool = False,
            attrs: dict[str, Any] | None = None, trace: int = 0) -> bytes:
        nonlocal n
        n += 1
        sid = n.to_bytes(8, "big")
        start = int(T0 * 1e9) - int(ms * 1e6)
        out.append(SpanRecord(trace.to_bytes(16, "big"), sid, parent, service, "op", int(kind),
                              start, int(T0 * 1e9), error, attrs or {}, res(service)))
        return sid

    for t in range(1, 21):
        root = add("frontend", SpanKind.SERVER, b"", 50 + t, trace=t)
        c = add("frontend", SpanKind.CLIENT, root, 10 + t % 5, trace=t)
        s = add("cart", SpanKind.SERVER, c, 8 + t % 5, trace=t)
        add("cart", SpanKind.CLIENT, s, 1 + t % 3, attrs={"db.system": "redis"}, trace=t)
        c = add("frontend", SpanKind.CLIENT, root, 30 + t, error=t % 5 == 0, trace=t)
        s = add("checkout", SpanKind.SERVER, c, 28 + t, error=t % 5 == 0, trace=t)
        add("checkout", SpanKind.CLIENT, s, 3, attrs={"db.system": "postgresql",
                                                      "db.namespace": "orders"}, trace=t)
        c = add("checkout", SpanKind.CLIENT, s, 12, error=t % 5 == 0, trace=t)
        add("payment", SpanKind.SERVER, c, 10, error=t % 5 == 0, trace=t)
        if t % 10 == 0:  # the client gave up; no server span ever arrives
            add("checkout", SpanKind.CLIENT, s, 2000, error=True,
                attrs={"peer.service": "bank-api"}, trace=t)
    return out


def check_golden(name: str, actual: Any) -> None:
    from collector.readapi import dumps

    path = GOLDEN / name
    text = dumps(actual)
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        if os.environ.get("UPDATE_GOLDEN") != "1":
            pytest.fail(f"golden file {path} is missing; run with UPDATE_GOLDEN=1 to write it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert json.loads(text) == json.loads(path.read_text()), (
        f"{name} differs from its golden file; if the change is intended, rerun with "
        "UPDATE_GOLDEN=1 and review the diff"
    )


def test_golden_graph_and_service() -> None:
    import asyncio

    from collector import replay
    from collector.config import CollectorConfig
    from collector.wiring import build_app, build_service

    clock = FixedClock(T0)
    service = build_service(CollectorConfig(), clock=clock)
    body = replay.to_otlp_request(shop_spans())

    async def scenario() -> tuple[Any, Any]:
        # The real app in-process (the fixed clock needs it); ticks are driven by hand.
        transport = httpx.ASGITransport(app=build_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://conway") as client:
            r = await client.post("/v1/traces", content=body, headers=PB)
            assert r.status_code == 200
            clock.now = T0 + 5  # past the pairing TTL: the bank-api call expires now
            with service.lock:
                service.parts["graph"].tick(clock.now)
            g = (await client.get("/api/graph?window=60")).json()
            svc = (await client.get("/api/services/checkout?window=60")).json()
            return g, svc

    g, svc = asyncio.run(scenario())
    check_golden("graph_window60.json", g)
    check_golden("service_checkout.json", svc)


def test_busy_receiver_answers_503_with_retry_after() -> None:
    import asyncio

    from collector.config import CollectorConfig, EdgeConfig
    from collector.wiring import build_app, build_service

    service = build_service(CollectorConfig(edge=EdgeConfig(max_inflight_requests=1)))
    app = build_app(service)

    async def scenario() -> tuple[int, str | None, int, int]:
        release = asyncio.Event()
        started = asyncio.Event()
        body = pb_pair("busy", 2)

        async def slow_body() -> Any:
            yield body[:10]
            started.set()
            await release.wait()
            yield body[10:]

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://conway") as client:
            first = asyncio.create_task(
                client.post("/v1/traces", content=slow_body(), headers=PB))
            await started.wait()
            second = await client.post("/v1/traces", content=body, headers=PB)
            release.set()
            done = await first
            third = await client.post("/v1/traces", content=body, headers=PB)
            return second.status_code, second.headers.get("retry-after"), done.status_code, \
                third.status_code

    busy, retry_after, first, after = asyncio.run(scenario())
    assert busy == 503 and retry_after == "1"
    assert first == 200 and after == 200


def test_partial_success_counts_rejected_spans(collector: str) -> None:
    doc = json.loads(json_pair("partial", hex_ids=True))
    spans = doc["resourceSpans"][1]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "00" * 8})  # all-zero ids are invalid in OTLP
    r = httpx.post(f"{collector}/v1/traces", content=json.dumps(doc).encode(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and partial["errorMessage"]
    assert edge(collector, "partial-a", "partial-b")["calls"] == 1
