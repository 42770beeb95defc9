from __future__ import annotations

import itertools

from collector.model import Attributes, ConnectionType, SpanKind, SpanRecord
from collector.pairing import Pairer, PairingConfig

_ids = itertools.count(1)
TRACE = bytes(range(16))


def span(
    service: str,
    kind: SpanKind,
    span_id: bytes | None = None,
    parent: bytes = b"",
    error: bool = False,
    attrs: Attributes | None = None,
    duration_ms: float = 10.0,
    trace: bytes = TRACE,
) -> SpanRecord:
    sid = span_id or next(_ids).to_bytes(8, "big")
    return SpanRecord(trace, sid, parent, service, "op", int(kind), 0, int(duration_ms * 1e6),
                      error, attrs or {}, {"service.name": service})


def client_server(client: str, server: str, client_error: bool = False,
                  server_error: bool = False) -> tuple[SpanRecord, SpanRecord]:
    c = span(client, SpanKind.CLIENT, parent=b"\x01" * 8, error=client_error, duration_ms=12)
    s = span(server, SpanKind.SERVER, parent=c.span_id, error=server_error, duration_ms=9)
    return c, s


def test_halves_pair_in_either_order_with_both_durations_and_errors() -> None:
    p = Pairer()
    c, s = client_server("frontend", "cart", client_error=True, server_error=True)
    assert p.feed([s], 0.0) == []
    (call,) = p.feed([c], 0.5)
    assert (call.client, call.server, call.connection_type) == ("frontend", "cart", "")
    assert call.client_duration_ns == 12_000_000 and call.server_duration_ns == 9_000_000
    assert call.client_error and call.server_error and call.failed
    c2, s2 = client_server("frontend", "cart", client_error=True)
    (call2,) = p.feed([c2, s2], 1.0)
    assert call2.client_error and not call2.server_error
    assert p.counters.paired == 2 and len(p) == 0


def test_producer_consumer_pair_as_messaging() -> None:
    p = Pairer()
    prod = span("checkout", SpanKind.PRODUCER, parent=b"\x02" * 8)
    cons = span("email", SpanKind.CONSUMER, parent=prod.span_id)
    (call,) = p.feed([prod, cons], 0.0)
    assert call.connection_type == ConnectionType.MESSAGING


def test_a_batch_waits_for_a_linked_producer_that_arrives_after_it() -> None:
    # Each process exports on its own schedule: email's batch span can reach the collector
    # before checkout's producer span. Each message is still one delivery, with its lag.
    topic = {"messaging.system": "kafka", "messaging.destination.name": "order-events"}
    p = Pairer(PairingConfig(ttl_s=2.0))
    early = span("checkout", SpanKind.PRODUCER, parent=b"\x02" * 8, attrs=topic, trace=b"a" * 16)
    late = span("checkout", SpanKind.PRODUCER, parent=b"\x02" * 8, attrs=topic, trace=b"b" * 16)
    never = (b"c" * 16, b"\x09" * 8)  # a producer that never arrives (say, sampled out)
    batch = span("email", SpanKind.CONSUMER, attrs=topic, trace=b"d" * 16, duration_ms=5)
    batch.start_ns, batch.end_ns = 40_000_000, 45_000_000
    batch.links = ((early.trace_id, early.span_id), (late.trace_id, late.span_id), never)
    p.feed([early], 0.0)
    first = p.feed([batch], 0.1)
    assert [(c.client, c.server, c.lag_ns) for c in first] == [
        ("checkout", "kafka: order-events", -1), ("kafka: order-events", "email", 30_000_000)]
    second = p.feed([late], 0.2)
    assert [(c.client, c.server, c.lag_ns) for c in second] == [
        ("checkout", "kafka: order-events", -1), ("kafka: order-events", "email", 30_000_000)]
    (third,) = p.expire(5.0)  # the one never seen: delivered all the same, lag unknown
    assert (third.client, third.server, third.lag_ns) == ("kafka: order-events", "email", -1)
    assert p.counters.paired == 2 and len(p) == 0


def test_root_server_is_called_by_user_at_once() -> None:
    p = Pairer()
    (call,) = p.feed([span("frontend", SpanKind.SERVER)], 0.0)
    assert (call.client, call.server, call.connection_type) == ("user", "frontend", "virtual_node")
    assert call.client_is_virtual and call.client_duration_ns == -1


def test_database_client_completes_at_once_named_by_namespace_then_system() -> None:
    p = Pairer()
    pg = span("checkout", SpanKind.CLIENT, parent=b"\x03" * 8,
              attrs={"db.system": "postgresql", "db.namespace": "orders",
                     "server.address": "127.0.0.1"})
    redis = span("cart", SpanKind.CLIENT, parent=b"\x03" * 8, error=True,
                 attrs={"db.system": "redis", "server.address": "127.0.0.1"})
    calls = p.feed([pg, redis], 0.0)
    assert [(c.client, c.server, c.connection_type) for c in calls] == [
        ("checkout", "orders", "database"),
        ("cart", "redis", "database"),
    ]
    assert calls[1].client_error and calls[1].server_is_virtual


def test_unpaired_clients_expire_to_virtual_peer_or_are_counted() -> None:
    p = Pairer(PairingConfig(ttl_s=2.0))
    ext = span("payment", SpanKind.CLIENT, parent=b"\x04" * 8,
               attrs={"peer.service": "bank-api"})
    queue = span("checkout", SpanKind.PRODUCER, parent=b"\x04" * 8,
                 attrs={"messaging.system": "kafka"})
    anon = span("ad", SpanKind.CLIENT, parent=b"\x04" * 8)
    orphan_server = span("quote", SpanKind.SERVER, parent=b"\x05" * 8)
    assert p.feed([ext, queue, anon, orphan_server], 100.0) == []
    assert p.expire(101.9) == []  # not yet: no sleeping, the clock is ours
    calls = p.expire(102.0)
    assert [(c.client, c.server, c.connection_type) for c in calls] == [
        ("payment", "bank-api", "virtual_node"),
        ("checkout", "kafka", "messaging_system"),
    ]
    assert p.counters.expired == 4
    assert p.counters.virtual == 2
    assert p.counters.unpaired == 2
    assert len(p) == 0


def test_unknown_peer_option_names_a_node_like_otelcol() -> None:
    p = Pairer(PairingConfig.otelcol(ttl_s=1.0))
    p.feed([span("foo", SpanKind.CLIENT, parent=b"\x04" * 8)], 0.0)
    (call,) = p.expire(5.0)
    assert call.server == "unknown"


def test_late_half_after_expiry_does_not_pair() -> None:
    p = Pairer(PairingConfig(ttl_s=1.0))
    c, s = client_server("a", "b")
    p.feed([c], 0.0)
    p.expire(1.0)
    assert p.feed([s], 1.5) == []
    assert p.counters.paired == 0


def test_full_store_drops_and_counts_with_a_named_error() -> None:
    p = Pairer(PairingConfig(max_items=3))
    halves = [span("a", SpanKind.CLIENT, parent=b"\x06" * 8) for _ in range(5)]
    p.feed(halves, 0.0)
    assert len(p) == 3
    assert p.counters.dropped == 2
    assert p.last_error is not None and "dropped 2 spans" in str(p.last_error)
    # A half whose partner is pending still pairs when the store is full.
    s = span("b", SpanKind.SERVER, parent=halves[0].span_id)
    (call,) = p.feed([s], 0.1)
    assert call.server == "b"
    assert p.last_error is None


def test_flush_expires_everything() -> None:
    p = Pairer(PairingConfig(ttl_s=100.0))
    p.feed([span("a", SpanKind.CLIENT, parent=b"\x06" * 8, attrs={"peer.service": "x"})], 0.0)
    assert [c.server for c in p.flush(1.0)] == ["x"]
