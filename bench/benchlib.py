"""What the benchmarks share: free ports, child processes, and the synthetic shop traffic.

Benchmarks run as scripts (``python bench/NAME.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SERVICES = ("frontend", "cart", "checkout", "payment", "currency", "shipping")
CALLS = (("frontend", "cart"), ("frontend", "checkout"), ("checkout", "payment"),
         ("checkout", "currency"), ("checkout", "shipping"), ("frontend", "currency"))
# One trace: a frontend SERVER root, three client/server pairs, one database CLIENT span.
SPANS_PER_TRACE = 8
CALLS_PER_TRACE = 5  # user -> frontend, the three pairs, checkout -> orders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0,
              log: Path | None = None) -> None:
    """Until ``url`` answers 200; exits the benchmark, with the child's log, if it dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = log.read_text(errors="replace")[-4000:] if log is not None else (
                proc.stderr.read().decode(errors="replace") if proc.stderr else "")
            raise SystemExit(f"{url}: process exited with {proc.returncode}\n{said}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise SystemExit(f"{url} not ready after {timeout_s:g} s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """End a child this benchmark started, by its PID, and wait for it (SIGKILL after
    ``timeout_s``; give a parent of other processes time to stop them)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def shop_batch(rng: random.Random, first_id: int, traces: int, t0_ns: int,
               id_prefix: bytes = b"", fail: dict[str, float] | None = None,
               shops: int = 1) -> tuple[bytes, int, int]:
    """(OTLP protobuf body, spans, calls) for ``traces`` whole shop traces numbered from
    ``first_id``; trace ids are ``id_prefix`` + the number, 16 bytes in all. Realistic spans:
    semantic-convention attributes, 2% of calls failing on both halves (``fail``: another
    share for the calls to some servers, a fault there). With ``shops`` > 1, trace ``n`` runs
    in shop ``n % shops``, whose services are named ``frontend-7``, ``cart-7``...: six
    services a shop, so many services are all seen all the time."""
    req = ExportTraceServiceRequest()
    resources: dict[str, Any] = {}

    def scope(svc: str, n: int) -> Any:
        name = svc if shops == 1 else f"{svc}-{n % shops}"
        spans = resources.get(name)
        if spans is None:
            rs = req.resource_spans.add()
            for k, v in (("service.name", name), ("service.version", "1.2.3"),
                         ("service.namespace", "shop"), ("telemetry.sdk.language", "python")):
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = k, v
            spans = resources[name] = rs.scope_spans.add().spans
        return spans

    for n in range(first_id, first_id + traces):
        scopes = {svc: scope(svc, n) for svc in SERVICES}
        trace = id_prefix + n.to_bytes(16 - len(id_prefix), "big")
        root_id = (n * 16).to_bytes(8, "big")
        root = scopes["frontend"].add()
        root.trace_id, root.span_id, root.name, root.kind = trace, root_id, "GET /", 2
        root.start_time_unix_nano, root.end_time_unix_nano = t0_ns, t0_ns + 80_000_000
        for k, v in (("http.request.method", "GET"), ("http.route", "/"),
                     ("url.path", "/"), ("server.address", "127.0.0.1")):
            a = root.attributes.add()
            a.key, a.value.string_value = k, v
        for j, (client, server) in enumerate(rng.sample(CALLS, 3)):
            cid = (n * 16 + 2 * j + 1).to_bytes(8, "big")
            sid = (n * 16 + 2 * j + 2).to_bytes(8, "big")
            dur = int(rng.lognormvariate(16, 0.5))
            err = rng.random() < (fail or {}).get(server, 0.02)
            c = scopes[client].add()
            c.trace_id, c.span_id, c.parent_span_id = trace, cid, root_id
            c.name, c.kind = f"GET {server}", 3
            c.start_time_unix_nano, c.end_time_unix_nano = t0_ns, t0_ns + dur
            for k, v in (("http.request.method", "GET"), ("server.address", "127.0.0.1"),
                         ("url.full", f"http://127.0.0.1:8105/{server}")):
                a = c.attributes.add()
                a.key, a.value.string_value = k, v
            a = c.attributes.add()
            a.key, a.value.int_value = "http.response.status_code", 500 if err else 200
            s = scopes[server].add()
            s.trace_id, s.span_id, s.parent_span_id = trace, sid, cid
            s.name, s.kind = f"GET /{server}", 2
            s.start_time_unix_nano, s.end_time_unix_nano = t0_ns + 1000, t0_ns + dur - 1000
            if err:
                c.status.code = s.status.code = 2
        db = scopes["checkout"].add()
        db.trace_id, db.span_id = trace, (n * 16 + 15).to_bytes(8, "big")
        db.parent_span_id, db.name, db.kind = root_id, "INSERT orders", 3
        db.start_time_unix_nano, db.end_time_unix_nano = t0_ns, t0_ns + 3_000_000
        for k, v in (("db.system", "postgresql"), ("db.namespace", "orders"),
                     ("server.address", "127.0.0.1")):
            a = db.attributes.add()
            a.key, a.value.string_value = k, v
    return req.SerializeToString(), traces * SPANS_PER_TRACE, traces * CALLS_PER_TRACE
