from __future__ import annotations

import itertools

import pytest

from collector.graph import TrafficAppender, TrafficGraph
from collector.model import Attributes, Snapshot, SpanKind, SpanRecord
from collector.pipeline import run_pipeline

_ids = itertools.count(1)


def span(service: str, kind: SpanKind, parent: bytes = b"", error: bool = False,
         attrs: Attributes | None = None, ms: float = 10.0,
         resource: Attributes | None = None) -> SpanRecord:
    sid = next(_ids).to_bytes(8, "big")
    return SpanRecord(b"\x07" * 16, sid, parent, service, "op", int(kind), 0, int(ms * 1e6),
                      error, attrs or {}, resource or {"service.name": service})


def call(client: str, server: str, client_error: bool = False, server_error: bool = False,
         ms: float = 10.0) -> list[SpanRecord]:
    c = span(client, SpanKind.CLIENT, parent=b"\x01" * 8, error=client_error, ms=ms)
    s = span(server, SpanKind.SERVER, parent=c.span_id, error=server_error, ms=ms / 2)
    return [c, s]


def snapshot(g: TrafficGraph, now: float, window: float = 60.0,
             up: dict[str, bool | None] | None = None) -> Snapshot:
    return run_pipeline(Snapshot(window, now), [TrafficAppender(g, lambda: up or {})])


def test_nodes_and_edges_with_rates_errors_and_meta() -> None:
    g = TrafficGraph(started_at=1000.0)
    spans: list[SpanRecord] = [span("frontend", SpanKind.SERVER)]
    for i in range(10):
        spans += call("frontend", "cart", client_error=i < 3, server_error=i < 1)
    spans.append(span("cart", SpanKind.CLIENT, parent=b"\x02" * 8, attrs={"db.system": "redis"}))
    g.consume(spans, 1010.0)
    snap = snapshot(g, 1010.5, window=10.0)
    assert set(snap.nodes) == {"user", "frontend", "cart", "redis"}
    assert snap.nodes["redis"].kind == "virtual"
    assert snap.nodes["user"].kind == "virtual"
    assert snap.nodes["cart"].kind == "service"
    cart = snap.nodes["cart"]
    assert cart.meta["calls"] == 10 and cart.meta["errors"] == 1
    assert cart.rate_rps == pytest.approx(1.0)
    edge = snap.edges[("frontend", "cart")]
    assert edge.meta == {"calls": 10, "errors": 3, "client_errors": 3, "server_errors": 1,
                         "client_only_errors": 2}
    assert edge.error_ratio == pytest.approx(0.3)
    assert edge.p95_ms == pytest.approx(10.0, rel=0.02)  # the caller's view
    assert snap.edges[("cart", "redis")].connection_type == "database"
    assert snap.nodes["redis"].meta["calls"] == 1
    # `user` serves nothing: its rate is that of the requests it sends.
    user = snap.nodes["user"]
    assert user.rate_rps == pytest.approx(snap.edges[("user", "frontend")].rate_rps)
    assert user.rate_rps > 0 and user.meta["rate_of"] == "calls made"
    assert "rate_of" not in snap.nodes["redis"].meta


def test_idle_edges_leave_the_window_but_nodes_stay_known() -> None:
    g = TrafficGraph(started_at=0.0)
    g.consume(call("a", "b"), 100.0)
    snap = snapshot(g, 300.0, window=60.0)
    assert snap.edges == {}
    assert set(snap.nodes) == {"a", "b"} and snap.nodes["b"].rate_rps == 0.0


def test_scraped_only_services_appear_with_up() -> None:
    g = TrafficGraph(started_at=0.0)
    g.consume(call("a", "b"), 10.0)
    snap = snapshot(g, 10.0, up={"b": True, "quote": False})
    assert snap.nodes["quote"].meta["up"] is False
    assert snap.nodes["quote"].kind == "service"
    assert snap.nodes["b"].meta["up"] is True
    assert snap.nodes["a"].meta["up"] is None


def test_versions_per_service() -> None:
    g = TrafficGraph(started_at=0.0)
    res: Attributes = {"service.name": "cart", "service.version": "1.4.0"}
    g.consume([span("cart", SpanKind.SERVER, resource=res)], 10.0)
    g.consume([span("cart", SpanKind.SERVER,
                    resource={"service.name": "cart", "service.version": "1.5.0"})], 20.0)
    assert [(v.version, v.first_seen) for v in g.versions_of("cart")] == [("1.4.0", 10.0),
                                                                           ("1.5.0", 20.0)]
    assert snapshot(g, 20.0).nodes["cart"].meta["versions"] == ["1.4.0", "1.5.0"]


def test_node_and_edge_limits_are_counted() -> None:
    g = TrafficGraph(started_at=0.0, max_nodes=3, max_edges=1)
    g.consume(call("a", "b") + call("a", "c") + call("d", "e"), 1.0)
    assert len(g.kinds) == 3
    assert len(g.connection_types) == 1
    assert g.dropped_edges >= 1 and g.dropped_nodes >= 1


def test_tick_expires_to_virtual_nodes_and_forgets_after_retention() -> None:
    g = TrafficGraph(started_at=0.0, retention_s=60.0)
    g.consume([span("pay", SpanKind.CLIENT, parent=b"\x03" * 8,
                    attrs={"peer.service": "bank"})], 10.0)
    g.tick(11.0)
    assert ("pay", "bank") not in g.connection_types
    g.tick(12.0)
    assert g.connection_types[("pay", "bank")] == "virtual_node"
    assert g.kinds["bank"] == "virtual"
    g.tick(200.0)
    assert g.kinds == {} and g.connection_types == {}


def test_edge_created_by_an_expired_client_half_becomes_direct_when_pairs_arrive() -> None:
    g = TrafficGraph(started_at=0.0)
    g.consume([span("frontend", SpanKind.CLIENT, parent=b"\x03" * 8, error=True,
                    attrs={"peer.service": "cart"})], 10.0)
    g.tick(20.0)  # cart was down: the call expires to a (virtual) node named cart
    assert g.connection_types[("frontend", "cart")] == "virtual_node"
    g.consume(call("frontend", "cart"), 21.0)
    assert g.connection_types[("frontend", "cart")] == ""
    assert g.kinds["cart"] == "service"
    snap = snapshot(g, 21.0)
    assert snap.edges[("frontend", "cart")].meta["client_only_errors"] == 1
