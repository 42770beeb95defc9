"""Ingest throughput: spans/s through the real collector's HTTP endpoint into the graph, next to
a bare server that only decodes the same protobuf batches and walks every span's fields.

Both servers run as subprocesses on free loopback ports; several concurrent httpx senders post
batches of ~1,000 realistic spans (client/server pairs, database calls) for ``--seconds``
each. Prints spans/s for each, their ratio, and checks the collector counted every span sent.

    .venv/bin/python bench/ingest.py [--seconds 15] [--senders 4] [--batch 1000] [--pure-python]

Protobuf bodies go through the compiled fast path (``collector/_fastotlp.c``) when it is built;
``--pure-python`` also measures the collector without it, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import SPANS_PER_TRACE, free_port, shop_batch, stop, wait_http
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]

BARE_SERVER = r'''
import sys
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

OK = ExportTraceServiceResponse().SerializeToString()
count = 0

def walk(body: bytes) -> int:
    n = 0
    req = ExportTraceServiceRequest.FromString(body)
    for rs in req.resource_spans:
        res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                t = (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind,
                     s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                     s.status.message, res)
                attrs = {}
                for kv in s.attributes:
                    v = kv.value
                    which = v.WhichOneof("value")
                    attrs[kv.key] = getattr(v, which) if which else None
                n += 1
    return n

async def traces(request: Request) -> Response:
    global count
    body = await request.body()
    count += walk(body)
    return Response(OK, media_type="application/x-protobuf")

async def stats(request: Request) -> Response:
    return Response(str(count))

app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]),
                        Route("/count", stats)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
'''


# Every trace id starts with these 4 bytes; each post replaces them with a number of its own
# (``fresh``), so every request carries traces the collector has never seen. Re-sending the
# same ids would keep every trace "in progress" forever, and the diagnosis' per-trace analysis
# (run when a trace goes quiet) would never be measured.
MARKER = b"\xc0\x4e\x57\x41"


def fresh(body: bytes, n: int) -> bytes:
    """``body`` with its trace ids made unique to post number ``n``."""
    return body.replace(MARKER, (0x10000000 + n).to_bytes(4, "big"))


def make_batches(count: int, size: int, seed: int = 1) -> list[tuple[bytes, int, int]]:
    """(body, spans, calls) per batch of about ``size`` spans: whole shop traces, timed in
    2023 (the collector runs with --span-time-window 0), trace ids behind ``MARKER``."""
    rng = random.Random(seed)
    traces = max(1, size // SPANS_PER_TRACE)
    return [shop_batch(rng, 1 + k * traces, traces, 1_700_000_000_000_000_000, MARKER)
            for k in range(count)]


def start(cmd: list[str], port: int, ready_path: str,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    wait_http(f"http://127.0.0.1:{port}{ready_path}", proc)
    return proc


async def send(url: str, batches: list[tuple[bytes, int, int]], seconds: float,
               senders: int) -> tuple[int, int, int, float]:
    """(spans, calls, failed requests, elapsed) posting batches round-robin for ``seconds``."""
    sent_spans = sent_calls = failures = 0
    headers = {"Content-Type": "application/x-protobuf"}
    start = time.perf_counter()
    stop_at = start + seconds

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        nonlocal sent_spans, sent_calls, failures
        i = k
        while time.perf_counter() < stop_at:
            body, n, c = batches[i % len(batches)]
            r = await client.post(url, content=fresh(body, i // len(batches)), headers=headers)
            i += senders
            if r.status_code == 200:
                sent_spans += n
                sent_calls += c
            else:
                failures += 1

    limits = httpx.Limits(max_connections=senders)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(k, client) for k in range(senders)))
    return sent_spans, sent_calls, failures, time.perf_counter() - start


def metric(base: str, name: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for s in fam.samples:
            if s.name == name:
                total += s.value
    return total


def in_process(batches: list[tuple[bytes, int, int]], rounds: int) -> tuple[float, float]:
    """CPU cost without HTTP or senders: (bare walk spans/s, decode + ingest spans/s), the
    latter including the diagnosis' per-trace analysis as the server does it (every trace
    below its span budget, a weighted share above; flushed at the end, as if each trace had
    gone quiet). Enough rounds that the budget's rate meter reaches its steady state."""
    sys.path.insert(0, str(REPO))
    from collector import otlp
    from collector.config import CollectorConfig
    from collector.wiring import build_service

    ns: dict[str, object] = {}
    exec(BARE_SERVER.split("async def traces")[0], ns)  # the bare server's own walk()
    walk = ns["walk"]
    assert callable(walk)
    n = sum(b[1] for b in batches) * rounds
    bodies = [fresh(body, r) for r in range(rounds) for body, _, _ in batches]
    t = time.perf_counter()
    for body in bodies:
        walk(body)
    bare = n / (time.perf_counter() - t)
    service = build_service(CollectorConfig())
    t = time.perf_counter()
    for body in bodies:
        service.ingest(otlp.decode_traces(body, otlp.PROTOBUF).spans)
    service.parts["diagnosis"].traces.flush(time.time() + 3600)
    conway = n / (time.perf_counter() - t)
    return bare, conway


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="sending time per server")
    ap.add_argument("--senders", type=int, default=4, help="concurrent senders")
    ap.add_argument("--batch", type=int, default=1000, help="spans per request (about)")
    ap.add_argument("--pure-python", action="store_true",
                    help="also measure the collector with CONWAY_PURE_PYTHON=1 (no compiled "
                         "protobuf fast path)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from collector import otlp
    print(f"protobuf decoder: {otlp.FAST_DECODER_INFO}")
    batches = make_batches(16, a.batch)
    print(f"batches: {len(batches)} x ~{batches[0][1]} spans "
          f"({len(batches[0][0]) // 1024} KiB protobuf each); {a.senders} senders; "
          f"{a.seconds:g} s per server; {os.cpu_count()} CPUs (shared with whatever else runs)")

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bare_server.py"
        script.write_text(BARE_SERVER)
        port = free_port()
        bare = start([sys.executable, str(script), str(port)], port, "/count")
        try:
            spans, _, fails, elapsed = asyncio.run(
                send(f"http://127.0.0.1:{port}/v1/traces", batches, a.seconds, a.senders))
            bare_rate = spans / elapsed
            walked = int(httpx.get(f"http://127.0.0.1:{port}/count").text)
        finally:
            stop(bare)
    print(f"bare decode server : {bare_rate:>10,.0f} spans/s  ({spans:,} spans, "
          f"{fails} failed requests, {walked:,} walked)")

    ok = True
    for pure in ([False, True] if a.pure_python else [False]):
        label = "conway, pure Python" if pure else "conway collector"
        env = {"CONWAY_PURE_PYTHON": "1"} if pure else {}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # The batches are timed in 2023: accept any span time (the default window is one day).
        collector = start([sys.executable, "-m", "collector", "--port", str(port),
                           "--span-time-window", "0"], port, "/healthz", env)
        try:
            spans, calls, fails, elapsed = asyncio.run(
                send(f"{base}/v1/traces", batches, a.seconds, a.senders))
            rate = spans / elapsed
            received = metric(base, "conway_spans_received_total")
            edges_total = metric(base, "traces_service_graph_request_total")
            dropped = metric(base, "conway_pairing_dropped_total")
        finally:
            stop(collector)
        print(f"{label:<19}: {rate:>10,.0f} spans/s  ({spans:,} spans, {fails} failed "
              f"requests)")
        print(f"ratio collector/bare: {rate / bare_rate:.2f}  (target >= 0.5; target >= 100k "
              f"spans/s)")
        good = received == spans and edges_total == calls and dropped == 0
        ok = ok and good
        print(f"graph check        : received {received:,.0f} of {spans:,} spans sent; "
              f"{edges_total:,.0f} of {calls:,} calls on edges; {dropped:,.0f} dropped from "
              f"pairing -> {'OK' if good else 'MISMATCH'}")
    bare_cpu, conway_cpu = in_process(batches, 12)
    print(f"in-process, one core, no HTTP: bare walk {bare_cpu:,.0f} spans/s, decode + ingest "
          f"+ trace analysis "
          f"{conway_cpu:,.0f} spans/s, ratio {conway_cpu / bare_cpu:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
