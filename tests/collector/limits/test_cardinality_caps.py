"""Bounded everything: a 100,000-name cardinality attack leaves the node count at its cap with
every refusal counted (in /api/graph "limits" and on /metrics), while calls between services
the collector already knew keep being counted; the edge and pending-pair caps likewise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_collector import (
    PB,
    Collector,
    ValidTraffic,
    add_span,
    graph,
    metric,
    new_id,
    request,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_NODES = 1000
ATTACK = 100_000
PER_REQUEST = 25_000


@pytest.fixture(scope="module")
def capped() -> Iterator[str]:
    # A long pairing TTL: the halves of a valid call may wait behind the attack's big bodies.
    c = Collector("--max-nodes", str(MAX_NODES), "--pairing-ttl", "30")
    try:
        yield c.url
    finally:
        c.stop()


def attack_bodies(prefix: str) -> list[bytes]:
    """``ATTACK`` distinct service names (span-name-like, as a misconfigured SDK would send
    them), one root SERVER span each, ``PER_REQUEST`` resources per request."""
    bodies = []
    now = time.time_ns()
    template = ExportTraceServiceRequest()
    rs = template.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key = "service.name"
    span = rs.scope_spans.add().spans.add()
    span.kind = 2
    span.name = "GET /users/{id}"
    span.start_time_unix_nano, span.end_time_unix_nano = now - 1_000_000, now
    for first in range(0, ATTACK, PER_REQUEST):
        req = ExportTraceServiceRequest()
        for i in range(first, first + PER_REQUEST):
            kv.value.string_value = f"{prefix} /users/{i}"
            span.trace_id = (i + 1).to_bytes(16, "big")
            span.span_id = (i + 1).to_bytes(8, "big")
            req.resource_spans.append(rs)
        bodies.append(req.SerializeToString())
    return bodies


def test_100k_service_names_stay_at_the_node_cap(capped: str) -> None:
    # The valid services are known before the attack: they keep being graphed.
    with ValidTraffic(capped, "card") as valid:
        for body in attack_bodies("GET"):
            r = httpx.post(capped + "/v1/traces", content=body, headers=PB, timeout=60)
            assert r.status_code == 200
            warning = ExportTraceServiceResponse.FromString(r.content).partial_success
            assert warning.rejected_spans == 0  # received and counted, not graphed:
            assert f"past the node limit (max_nodes={MAX_NODES})" in warning.error_message
    valid.assert_all_counted()
    limits = graph(capped)["limits"]
    assert limits["max_nodes"] == MAX_NODES
    assert limits["nodes"] == MAX_NODES
    assert len(graph(capped)["nodes"]) == MAX_NODES
    # Every span of a refused service counts (and the call from `user` it would have made).
    assert limits["dropped_nodes"] >= ATTACK - MAX_NODES
    assert metric(capped, "conway_graph_dropped_nodes_total") == limits["dropped_nodes"]
    assert metric(capped, "conway_limit", name="max_nodes") == MAX_NODES
    assert metric(capped, "conway_limit_used", name="max_nodes") == MAX_NODES
    assert metric(capped, "conway_spans_received_total") >= ATTACK


def test_virtual_node_names_from_attributes_are_capped_too(capped: str) -> None:
    # Peers named by attributes (a database per tenant, say) are nodes as well.
    before = graph(capped)["limits"]
    req, spans = request(f"tenant-app-{new_id(8).hex()}")
    for i in range(2000):
        s = add_span(next(iter(spans.values())), 3, new_id(16))
        for key, value in (("db.system", "postgresql"), ("db.namespace", f"tenant_{i}")):
            kv = s.attributes.add()
            kv.key, kv.value.string_value = key, value
    r = httpx.post(capped + "/v1/traces", content=req.SerializeToString(), headers=PB)
    assert r.status_code == 200
    # A read may show the snapshot the last evaluation tick built (shared by readers, at most
    # a tick old): wait for one built after the post.
    deadline = time.monotonic() + 10
    while True:
        after = graph(capped)["limits"]
        if after["dropped_nodes"] - before["dropped_nodes"] >= 2000 \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["nodes"] == MAX_NODES
    assert after["dropped_nodes"] - before["dropped_nodes"] >= 2000
    assert after["dropped_edges"] - before["dropped_edges"] >= 2000


def test_edge_and_pending_pair_caps() -> None:
    c = Collector("--max-edges", "10", "--max-pending", "10", "--pairing-ttl", "60")
    try:
        url = c.url
        req, spans = request(*(f"edge-{i}" for i in range(20)))
        for s in spans.values():
            add_span(s, 2, new_id(16))  # a root: one call user -> edge-i
        r = httpx.post(url + "/v1/traces", content=req.SerializeToString(), headers=PB)
        assert "past the edge limit (max_edges=10)" in ExportTraceServiceResponse.FromString(
            r.content).partial_success.error_message
        # 30 client halves whose server half never comes: 10 wait, 20 are refused.
        req, spans = request("lonely")
        for _ in range(30):
            add_span(spans["lonely"], 3, new_id(16))
        r = httpx.post(url + "/v1/traces", content=req.SerializeToString(), headers=PB)
        message = ExportTraceServiceResponse.FromString(r.content).partial_success.error_message
        assert "edge pairing store full (10 pending halves): dropped 20 spans" in message
        limits = graph(url)["limits"]
        assert (limits["edges"], limits["max_edges"], limits["dropped_edges"]) == (10, 10, 10)
        assert (limits["pending"], limits["max_pending"], limits["dropped_pending"]) == (10, 10, 20)
        assert len(graph(url)["edges"]) == 10
        assert metric(url, "conway_graph_dropped_edges_total") == 10
        assert metric(url, "conway_pairing_dropped_total") == 20
        assert metric(url, "conway_limit_used", name="max_pending") == 10
    finally:
        c.stop()


def test_waiting_halves_hold_only_what_pairing_reads() -> None:
    import gc
    import tracemalloc

    from collector.model import SpanRecord
    from collector.pairing import Pairer, PairingConfig

    pairer = Pairer(PairingConfig(ttl_s=5.0))
    resource: dict[str, Any] = {"service.name": "fat"}
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        spans = []
        for i in range(1000):
            attrs: dict[str, Any] = {f"attr.{k}": f"value {i} {k}" for k in range(120)}
            attrs["peer.service"] = "bank"
            spans.append(SpanRecord((i + 1).to_bytes(16, "big"), (i + 1).to_bytes(8, "big"),
                                    b"", "fat", "GET " + "x" * 4000, 3, 0, 1000, False,
                                    attrs, resource))
        pairer.feed(spans, 0.0)
        del spans, attrs
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(pairer) == 1000
    # The 1000 spans as sent weigh ~10 MB; what waits is a fraction of that.
    assert held < 1_000_000, held
    calls = pairer.expire(10.0)
    assert [c.server for c in calls] == ["bank"] * 1000
