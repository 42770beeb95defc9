"""A real collector process for the edge, limits and state tests, hand-built protobuf, the
official SDK as a concurrent well-behaved client, and readers for /metrics and /api/graph."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from procs import free_port
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
PB = {"Content-Type": "application/x-protobuf"}
JSON_CT = {"Content-Type": "application/json"}
READY_TIMEOUT_S = 30.0
COUNT_TIMEOUT_S = 20.0



class Collector:
    """A ``python -m collector`` process on a free loopback port; ``stop`` or ``kill`` it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "ab") if log is not None else None  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "--port", str(self.port), *args],
            cwd=REPO, stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"collector exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("collector did not become ready")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(url: str, name: str, /, **labels: str) -> float:
    """One sample of ``/metrics`` (0 when absent, as a counter that never moved)."""
    return metrics(url).get((name, tuple(sorted(labels.items()))), 0.0)


def graph(url: str, window: float = 900) -> dict[str, Any]:
    r = httpx.get(url + "/api/graph", params={"window": window}, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def edge_calls(url: str, source: str, target: str) -> int:
    """Cumulative calls counted on one edge (the service-graph counter of ``/metrics``)."""
    total = 0.0
    for (name, labels), value in metrics(url).items():
        d = dict(labels)
        if name == "traces_service_graph_request_total" and d.get("client") == source \
                and d.get("server") == target:
            total += value
    return int(total)


def wait_for_calls(url: str, source: str, target: str, expected: int) -> int:
    """Poll until the edge has ``expected`` calls (or the deadline); returns what it has."""
    deadline = time.monotonic() + COUNT_TIMEOUT_S
    got = edge_calls(url, source, target)
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        got = edge_calls(url, source, target)
    return got


# -- hand-built protobuf ------------------------------------------------------------------------

_ids = iter(range(1, 1 << 60))


def new_id(size: int) -> bytes:
    return (next(_ids) + (os.getpid() << 40)).to_bytes(size, "big")


def request(*services: str) -> tuple[ExportTraceServiceRequest, dict[str, Any]]:
    """An empty request with one resource (and one scope) per service: (request, spans of)."""
    req = ExportTraceServiceRequest()
    spans: dict[str, Any] = {}
    for name in services:
        rs = req.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", name
        spans[name] = rs.scope_spans.add().spans
    return req, spans


def add_span(spans: Any, kind: int, trace_id: bytes, parent: bytes = b"",
             start_ns: int | None = None, duration_ns: int = 5_000_000) -> Any:
    span: Any = spans.add()
    span.trace_id, span.span_id, span.parent_span_id = trace_id, new_id(8), parent
    span.name, span.kind = "op", kind
    span.start_time_unix_nano = time.time_ns() - duration_ns if start_ns is None else start_ns
    span.end_time_unix_nano = span.start_time_unix_nano + duration_ns
    return span


def pairs(prefix: str, n: int) -> bytes:
    """``n`` valid client/server pairs ``{prefix}-a -> {prefix}-b``, timed now."""
    req, spans = request(f"{prefix}-a", f"{prefix}-b")
    for _ in range(n):
        t = new_id(16)
        client = add_span(spans[f"{prefix}-a"], 3, t)
        add_span(spans[f"{prefix}-b"], 2, t, client.span_id)
    return req.SerializeToString()


# -- the well-behaved client sending at the same time -------------------------------------------

def sdk_provider(url: str, service: str, headers: dict[str, str] | None = None) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    # One export per span: many small requests, interleaved with whatever the test sends.
    p.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=url + "/v1/traces", headers=headers, timeout=30)))
    return p


def sdk_call(client: TracerProvider, server: TracerProvider) -> None:
    """One call ``client -> server`` through the SDK (a CLIENT span and its SERVER child)."""
    with client.get_tracer("hardening").start_as_current_span(
            "GET /thing", kind=SpanKind.CLIENT) as span:
        ctx = trace.set_span_in_context(span)
        with server.get_tracer("hardening").start_as_current_span(
                "GET /thing", context=ctx, kind=SpanKind.SERVER):
            pass


class ValidTraffic:
    """A thread sending calls ``{prefix}-a -> {prefix}-b`` with the official SDK exporter from
    ``__enter__`` until ``__exit__`` (and at least ``minimum`` calls); ``sent`` says how many.

    Use around the bad input; afterwards `assert_all_counted` checks none was lost."""

    def __init__(self, url: str, prefix: str, minimum: int = 20,
                 wait_first: bool = True) -> None:
        self.url = url
        self.prefix = f"{prefix}{next(_ids)}"  # unique per use: counts start at zero
        self.minimum = minimum
        self.wait_first = wait_first
        self.sent = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        a = sdk_provider(self.url, f"{self.prefix}-a")
        b = sdk_provider(self.url, f"{self.prefix}-b")
        try:
            while self.sent < self.minimum or not self._stop.is_set():
                sdk_call(a, b)
                self.sent += 1
                self._started.set()
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self._error = exc
        finally:
            self._started.set()
            a.shutdown()
            b.shutdown()

    def __enter__(self) -> ValidTraffic:
        self._thread.start()
        if self.wait_first:  # the first call is out before the bad input
            self._started.wait(timeout=COUNT_TIMEOUT_S)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        if self._error is not None and kind is None:
            raise self._error

    def assert_all_counted(self) -> None:
        assert not self._thread.is_alive(), "the SDK thread did not finish"
        assert self.sent >= self.minimum
        got = wait_for_calls(self.url, f"{self.prefix}-a", f"{self.prefix}-b", self.sent)
        assert got == self.sent, f"{self.sent} valid calls sent alongside, {got} counted"


def iter_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
