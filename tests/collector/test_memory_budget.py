"""One memory budget for the whole process: the caps derived from it fit in it, and the
bounded set that recognises re-sent spans; the pairing store drops re-sent spans (a replayed
batch adds no calls) and is capped by the budget."""

from __future__ import annotations

import itertools
import random
import tracemalloc

import pytest

from collector import limits
from collector.limits import DEFAULT_MEMORY, MemoryLimits, RecentSpans
from collector.model import Attributes, Call, SpanKind, SpanRecord
from collector.pairing import Pairer, PairingConfig

MIB = 1 << 20
_ids = itertools.count(1)


@pytest.mark.parametrize("mb", [128, 256, 1000, 4096])
def test_the_caps_fit_in_the_budget(mb: int) -> None:
    m = MemoryLimits.from_budget(mb)
    held = (limits.RESERVED_BYTES + m.max_inflight_bytes
            + m.max_pending_spans * limits.PENDING_SPAN_BYTES
            + m.max_traces * limits.PENDING_TRACE_BYTES
            + m.pairing_max_items * limits.PAIRING_ITEM_BYTES
            + 2 * m.max_seen_spans * limits.SEEN_SPAN_BYTES
            + m.window_cells * limits.WINDOW_CELL_BYTES)
    assert held <= m.budget_bytes == mb * MIB
    assert held > 0.95 * m.budget_bytes  # and use it
    # One full trace takes at most a 16th of the pending spans, and no budget cuts an
    # ordinary trace short: from the default budget up, the per-trace cap is the full one.
    assert 16 * m.max_spans_per_trace <= m.max_pending_spans
    assert m.max_spans_per_trace >= 100
    if mb >= 256:
        assert m.max_spans_per_trace == limits.MAX_SPANS_PER_TRACE
    assert m.max_traces <= m.max_pending_spans


def test_the_default_budget_is_256_mb_and_too_small_a_budget_is_refused() -> None:
    assert DEFAULT_MEMORY == MemoryLimits.from_budget(256)
    assert DEFAULT_MEMORY.max_inflight_bytes == 64 * MIB  # the receiver's default
    # A replay of 6,000 traces of 8 spans stays recognised however long it loops.
    assert DEFAULT_MEMORY.max_seen_spans // 2 >= 6_000 * 8
    for bad in (0, 64, float("nan")):
        with pytest.raises(ValueError, match="memory budget"):
            MemoryLimits.from_budget(bad)


def test_the_stated_cost_of_a_remembered_span_holds() -> None:
    recent = RecentSpans(200_000)
    keys = [(i.to_bytes(16, "big"), i.to_bytes(8, "big")) for i in range(1, 100_001)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for t, s in keys:
            recent.seen(t, s)
        per_key = (tracemalloc.get_traced_memory()[0] - base) / len(keys)
    finally:
        tracemalloc.stop()
    assert per_key <= limits.SEEN_SPAN_BYTES


def test_recent_spans_remember_a_retry_loop_and_forget_the_distant_past() -> None:
    recent = RecentSpans(6)  # generations of 3
    loop = [(b"t" * 16, bytes([i]) * 8) for i in range(3)]
    assert [recent.seen(*k) for k in loop] == [False] * 3
    for _ in range(100):  # a retry loop over 3 spans: recognised every time
        assert all(recent.seen(*k) for k in loop)
    others = [(b"u" * 16, bytes([i]) * 8) for i in range(6)]
    assert not any(recent.seen(*k) for k in others)
    assert len(recent) <= 6
    assert not recent.seen(*loop[0])  # 6 newer spans since: forgotten, taken for new
    assert recent.seen(b"t" * 16, bytes([0]) * 8)
    assert not recent.seen(b"v" * 16, bytes([0]) * 8)  # same span id, another trace


def span(service: str, kind: SpanKind, trace: bytes, parent: bytes = b"",
         attrs: Attributes | None = None) -> SpanRecord:
    return SpanRecord(trace, next(_ids).to_bytes(8, "big"), parent, service, "op", int(kind),
                      0, 10_000_000, False, dict(attrs or {}), {"service.name": service})


def batch() -> list[SpanRecord]:
    """A root call user -> front, a call front -> pay, a database call, a lone client half."""
    t = next(_ids).to_bytes(16, "big")
    root = span("front", SpanKind.SERVER, t)
    client = span("front", SpanKind.CLIENT, t, root.span_id)
    server = span("pay", SpanKind.SERVER, t, client.span_id)
    db = span("pay", SpanKind.CLIENT, t, server.span_id, {"db.system": "postgresql"})
    ext = span("pay", SpanKind.CLIENT, t, server.span_id, {"peer.service": "bank"})
    internal = span("pay", SpanKind.INTERNAL, t, server.span_id)
    return [root, client, server, db, ext, internal]


def edges(calls: list[Call]) -> list[tuple[str, str]]:
    return sorted((c.client, c.server) for c in calls)


def test_a_replayed_batch_adds_no_calls() -> None:
    p = Pairer(PairingConfig(ttl_s=2.0))
    spans = batch()
    first = p.feed(spans, 0.0) + p.expire(2.0)
    assert edges(first) == [("front", "pay"), ("pay", "bank"), ("pay", "postgresql"),
                            ("user", "front")]
    for k in range(1, 20):  # replayed while the lone half waits, and long after it expired
        assert p.feed(spans, 0.5 * k) + p.expire(0.5 * k) == []
    assert p.counters.duplicates == 19 * 5  # the INTERNAL span is not pairing's business
    assert p.counters.paired == 1 and p.counters.roots == 1 and p.counters.database == 1
    assert len(p) == 0
    # Halves that meet across batches still pair; a half re-sent before its partner came
    # still makes one call.
    client, server = batch()[1:3]
    assert p.feed([client], 20.0) == [] and p.feed([client], 20.1) == []
    assert edges(p.feed([server, server], 20.2)) == [("front", "pay")]


def test_drop_duplicates_lets_the_graph_filter_once() -> None:
    p = Pairer()
    spans = batch()
    assert p.drop_duplicates(spans) is spans  # nothing seen yet: the same list, no copy
    fresh = [span("front", SpanKind.SERVER, b"\x09" * 16)]
    assert p.drop_duplicates([*spans, *fresh]) == [spans[-1], *fresh]  # INTERNAL passes
    assert edges(p.feed(fresh, 0.0, deduplicated=True)) == [("user", "front")]


def test_the_pairing_store_is_capped_by_the_budget() -> None:
    assert PairingConfig().max_items == DEFAULT_MEMORY.pairing_max_items
    assert PairingConfig().max_seen == DEFAULT_MEMORY.max_seen_spans


def test_drop_seen_agrees_with_seen_span_by_span() -> None:
    rng = random.Random(3)
    one, other = RecentSpans(10), RecentSpans(10)
    for _ in range(200):
        batch = [span("a", rng.choice([SpanKind.INTERNAL, SpanKind.SERVER]),
                      bytes([rng.randrange(3)]) * 16) for _ in range(rng.randrange(6))]
        for s in batch:  # ids drawn again from a small range: many repeats
            s.span_id = bytes([rng.randrange(8)]) * 8
        want = [s for s in batch if s.kind < 2 or not one.seen(s.trace_id, s.span_id)]
        got, dropped = other.drop_seen(batch, 2)
        assert list(got) == want and dropped == len(batch) - len(want)
        assert len(other) <= 10
