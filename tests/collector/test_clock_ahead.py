"""Spans from a host whose clock is 5 s ahead (official SDK, real collector process): counted
on /metrics, the service's node says by how much, and the calls are graphed at arrival."""

from __future__ import annotations

import time

from live_collector import Collector, edge_calls, graph, metric, sdk_provider
from opentelemetry import trace
from opentelemetry.trace import SpanKind

AHEAD_NS = 5_000_000_000


def test_spans_from_a_clock_ahead_are_counted_and_graphed_at_arrival() -> None:
    collector = Collector()
    try:
        fast = sdk_provider(collector.url, "skewed-svc")
        normal = sdk_provider(collector.url, "caller-svc")
        for _ in range(4):
            now = time.time_ns()
            with normal.get_tracer("t").start_as_current_span(
                    "GET /x", kind=SpanKind.CLIENT,
                    attributes={"peer.service": "skewed-svc"}) as call:
                ctx = trace.set_span_in_context(call)
                s = fast.get_tracer("t").start_span("GET /x", context=ctx, kind=SpanKind.SERVER,
                                                    start_time=now + AHEAD_NS)
                s.end(end_time=now + AHEAD_NS + 2_000_000)
        fast.force_flush()
        normal.force_flush()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and \
                edge_calls(collector.url, "caller-svc", "skewed-svc") < 4:
            time.sleep(0.1)
        assert edge_calls(collector.url, "caller-svc", "skewed-svc") == 4
        assert metric(collector.url, "conway_spans_clock_ahead_total") == 4
        nodes = {n["id"]: n for n in graph(collector.url, 60)["nodes"]}
        assert 4.0 <= nodes["skewed-svc"]["clock_ahead_s"] <= 5.0
        assert "clock_ahead_s" not in nodes["caller-svc"]
        # Placed by arrival: the calls are in the last minute's rate now, not in 5 s.
        edge = next(e for e in graph(collector.url, 60)["edges"]
                    if (e["source"], e["target"]) == ("caller-svc", "skewed-svc"))
        assert edge["rate_rps"] > 0
    finally:
        collector.stop()
