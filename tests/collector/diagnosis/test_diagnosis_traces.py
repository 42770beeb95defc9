"""Trace assembly (bounded, finished once whole or after a quiet time) and per-trace analysis."""

from __future__ import annotations

from collector.diagnosis.traces import TraceAssembler, analyze, peer_name
from collector.model import Attributes, SpanKind, SpanRecord
from collector.ports import PortMap

MS = 1_000_000
RES: Attributes = {}


def span(tid: int, sid: int, parent: int, service: str, kind: int, start_ms: float,
         end_ms: float, error: bool = False, attrs: Attributes | None = None) -> SpanRecord:
    return SpanRecord(tid.to_bytes(16, "big"), sid.to_bytes(8, "big"),
                      parent.to_bytes(8, "big") if parent else b"", service, "op", kind,
                      int(start_ms * MS), int(end_ms * MS), error, dict(attrs or {}), RES)


def test_trace_finishes_after_quiet_time_not_before() -> None:
    done: list[tuple[int, float]] = []
    asm = TraceAssembler(lambda spans, t, w: done.append((len(spans), t)), quiet_s=1.5)
    asm.add([span(1, 1, 0, "a", SpanKind.SERVER, 0, 10)], now=100.0)
    asm.add([span(1, 2, 1, "a", SpanKind.CLIENT, 1, 9)], now=101.0)
    asm.flush(102.4)
    assert done == []
    asm.flush(102.5)
    assert done == [(2, 100.0)]
    assert len(asm) == 0


def test_a_whole_trace_finishes_once_settled_without_waiting_for_quiet() -> None:
    done: list[int] = []
    asm = TraceAssembler(lambda spans, t, w: done.append(len(spans)), quiet_s=1.5)
    # frontend's export first (its call to checkout not yet answered), then checkout's, whose
    # database call needs no answer from anything instrumented.
    asm.add([span(1, 2, 1, "frontend", SpanKind.CLIENT, 1, 9, attrs={"peer.service": "co"}),
             span(1, 1, 0, "frontend", SpanKind.SERVER, 0, 10)], now=100.0)
    assert asm.finish_whole(100.5) == 0  # the call to checkout has no SERVER child yet
    asm.add([span(1, 4, 3, "co", SpanKind.CLIENT, 3, 7, attrs={"db.system": "postgresql"}),
             span(1, 3, 2, "co", SpanKind.SERVER, 2, 8)], now=100.6)
    assert asm.finish_whole(100.7) == 0  # arrived 0.1 s ago: another export may follow
    assert asm.finish_whole(100.9) == 1
    assert done == [4] and len(asm) == 0
    assert (asm.traces_finished, asm.traces_finished_whole) == (1, 1)


def test_a_trace_with_a_call_unanswered_or_a_parent_missing_waits_for_quiet() -> None:
    done: list[int] = []
    asm = TraceAssembler(lambda spans, t, w: done.append(len(spans)), quiet_s=1.5)
    # Trace 1: a failed call that says nothing of why (no SERVER child may ever come, or it
    # is late).
    asm.add([span(1, 2, 1, "frontend", SpanKind.CLIENT, 1, 2, error=True,
                  attrs={"peer.service": "co"}),
             span(1, 1, 0, "frontend", SpanKind.SERVER, 0, 3, error=True)], now=100.0)
    # Trace 2: checkout's spans, whose caller's (the root) export has not arrived.
    asm.add([span(2, 3, 2, "co", SpanKind.SERVER, 2, 8)], now=100.0)
    # Trace 3: no root at all (its parent was upstream of any instrumented service).
    asm.add([span(3, 5, 9, "co", SpanKind.SERVER, 2, 8)], now=100.0)
    assert asm.finish_whole(101.0) == 0 and done == []
    asm.flush(101.5)
    assert sorted(done) == [1, 1, 2]
    assert asm.traces_finished_whole == 0


def test_a_refused_call_needs_no_answer_but_a_timed_out_or_answered_one_does() -> None:
    done: list[int] = []
    asm = TraceAssembler(lambda spans, t, w: done.append(spans[0].trace_id[-1]), quiet_s=1.5)

    def failed_call(tid: int, attrs: Attributes) -> list[SpanRecord]:
        return [span(tid, 2, 1, "frontend", SpanKind.CLIENT, 1, 2, error=True,
                     attrs={"peer.service": "co", **attrs}),
                span(tid, 1, 0, "frontend", SpanKind.SERVER, 0, 3, error=True)]

    # Nothing listens on checkout's port: no SERVER span of it will ever come.
    asm.add(failed_call(1, {"error.type": "connection_refused"}), now=100.0)
    asm.add(failed_call(2, {"error.type": "httpx.ConnectError"}), now=100.0)
    # Timed out: checkout got the request and its slow SERVER span still comes.
    asm.add(failed_call(3, {"error.type": "timeout"}), now=100.0)
    asm.add(failed_call(4, {"error.type": "httpx.ConnectTimeout"}), now=100.0)
    # Answered 503 by something before checkout (a proxy): checkout's span may still come.
    asm.add(failed_call(5, {"error.type": "connection_refused",
                            "http.response.status_code": 503}), now=100.0)
    assert asm.finish_whole(100.2) == 0  # not settled yet
    assert asm.finish_whole(100.3) == 2 and sorted(done) == [1, 2]
    asm.flush(101.5)
    assert sorted(done) == [1, 2, 3, 4, 5]
    assert asm.traces_finished_whole == 2


def test_limits_are_named_and_drops_counted() -> None:
    done: list[int] = []
    asm = TraceAssembler(lambda spans, t, w: done.append(len(spans)), quiet_s=10,
                         max_traces=2, max_spans_per_trace=3)
    asm.add([span(1, i, 0, "a", SpanKind.INTERNAL, 0, 1) for i in range(1, 6)], now=0.0)
    assert asm.spans_dropped_trace_full == 2
    asm.add([span(2, 1, 0, "a", SpanKind.SERVER, 0, 1)], now=1.0)
    asm.add([span(3, 1, 0, "a", SpanKind.SERVER, 0, 1)], now=2.0)
    # The third pending trace pushes out the longest-idle one, finished early and counted.
    assert asm.traces_finished_early == 1
    assert done == [3]
    assert len(asm) == 2


def test_cascade_origin_is_deepest_failure_and_callers_are_victims() -> None:
    spans = [
        span(1, 1, 0, "frontend", SpanKind.SERVER, 0, 100, error=True),
        span(1, 2, 1, "frontend", SpanKind.CLIENT, 5, 95, error=True, attrs={"peer.service": "co"}),
        span(1, 3, 2, "co", SpanKind.SERVER, 6, 94, error=True),
        span(1, 4, 3, "co", SpanKind.CLIENT, 10, 90, error=True),
        span(1, 5, 4, "pay", SpanKind.SERVER, 11, 89, error=True),
    ]
    facts = analyze(spans)
    assert [(o.service, o.victims, o.absorbed_by) for o in facts.origins] == [
        ("pay", ["co", "frontend"], None)]


def test_client_error_without_server_child_blames_the_named_peer() -> None:
    ports = PortMap()
    ports.set(8109, "payment")
    spans = [
        span(1, 1, 0, "checkout", SpanKind.SERVER, 0, 50, error=True),
        span(1, 2, 1, "checkout", SpanKind.CLIENT, 1, 31, error=True,
             attrs={"server.address": "127.0.0.1", "server.port": 8109}),
        span(1, 3, 1, "checkout", SpanKind.CLIENT, 32, 40, error=True,
             attrs={"db.system": "postgresql", "db.namespace": "orders"}),
    ]
    facts = analyze(spans, ports)
    assert sorted((o.service, o.client_only) for o in facts.origins) == [
        ("orders", True), ("payment", True)]
    # The callee's visit carries the time the caller waited for it.
    waited = {v.service: v.self_ns / MS for v in facts.visits if v.client_only}
    assert waited == {"payment": 30.0, "orders": 8.0}


def test_fallback_is_absorbed_and_the_caller_is_no_victim() -> None:
    spans = [
        span(1, 1, 0, "frontend", SpanKind.SERVER, 0, 20),
        span(1, 2, 1, "frontend", SpanKind.CLIENT, 1, 10, error=True, attrs={"peer.service": "ad"}),
        span(1, 3, 2, "ad", SpanKind.SERVER, 2, 9, error=True),
    ]
    (origin,) = analyze(spans).origins
    assert (origin.service, origin.victims, origin.absorbed_by) == ("ad", [], "frontend")


def test_self_time_excludes_children_and_counts_parallel_calls_once() -> None:
    spans = [
        span(1, 1, 0, "a", SpanKind.SERVER, 0, 100),
        span(1, 2, 1, "a", SpanKind.CLIENT, 10, 60, attrs={"peer.service": "b"}),
        span(1, 3, 1, "a", SpanKind.CLIENT, 20, 70, attrs={"peer.service": "c"}),  # parallel
        span(1, 4, 2, "b", SpanKind.SERVER, 12, 58),
        span(1, 5, 3, "c", SpanKind.SERVER, 21, 69),
    ]
    visits = analyze(spans).visits
    self_ms = {v.service: v.self_ns / MS for v in visits}
    # a: 100 - union(10..70) = 40; b: 46 + 4 ms of network on its client span; c: 48 + 2.
    assert self_ms == {"a": 40.0, "b": 50.0, "c": 50.0}
    # The caller's side is kept apart too: the time inside each service's own spans.
    own_ms = {v.service: (v.self_ns - v.net_ns) / MS for v in visits}
    assert own_ms == {"a": 40.0, "b": 46.0, "c": 48.0}


def test_own_time_in_the_windows_leaves_out_the_callers_side() -> None:
    from collector.diagnosis.window import ServiceWindows

    windows = ServiceWindows()
    for i in range(20):  # the caller reads b's 5 ms answers 200 ms late
        spans = [span(i + 1, 1, 0, "a", SpanKind.SERVER, 0, 300),
                 span(i + 1, 2, 1, "a", SpanKind.CLIENT, 10, 260, attrs={"peer.service": "b"}),
                 span(i + 1, 3, 2, "b", SpanKind.SERVER, 20, 25)]
        windows.record(analyze(spans), 1_000.5)
    b = windows.aggregate("b", 1_000.0, 1_001.0)
    assert b.self_hist.quantile(0.5) > 200 > 10 > (b.own_hist.quantile(0.5) or 0) > 3
    assert b.own_hist.samples == b.self_hist.samples == 20


def test_peer_name_order_matches_the_graph() -> None:
    s = span(1, 1, 0, "cart", SpanKind.CLIENT, 0, 1,
             attrs={"db.system": "redis", "server.address": "127.0.0.1", "server.port": 6379})
    assert peer_name(s) == "redis"
    ext = span(1, 1, 0, "pay", SpanKind.CLIENT, 0, 1, attrs={"server.address": "api.psp.example"})
    assert peer_name(ext) == "api.psp.example"


def test_timeout_on_an_answering_callee_blames_where_the_time_went() -> None:
    # a gives up on b after 100 ms; b answers OK later, because c (b's callee) was slow.
    spans = [
        span(1, 1, 0, "a", SpanKind.SERVER, 0, 110, error=True),
        span(1, 2, 1, "a", SpanKind.CLIENT, 5, 105, error=True, attrs={"peer.service": "b"}),
        span(1, 3, 2, "b", SpanKind.SERVER, 6, 400),
        span(1, 4, 3, "b", SpanKind.CLIENT, 8, 395, attrs={"peer.service": "c"}),
        span(1, 5, 4, "c", SpanKind.SERVER, 9, 394),
    ]
    (origin,) = analyze(spans).origins
    assert (origin.service, origin.timeout, origin.victims) == ("c", True, ["a"])


def test_a_lost_client_span_does_not_count_as_the_callers_own_time() -> None:
    # a's CLIENT span (id 2) was dropped by an exporter; b's SERVER span still names it.
    spans = [
        span(1, 1, 0, "a", SpanKind.SERVER, 0, 100, error=True),
        span(1, 3, 2, "b", SpanKind.SERVER, 10, 90, error=True),
    ]
    facts = analyze(spans)
    self_ms = {v.service: v.self_ns / MS for v in facts.visits}
    assert self_ms == {"a": 20.0, "b": 80.0}
    assert [(o.service, o.victims) for o in facts.origins] == [("b", ["a"])]


def test_service_windows_cap_counts_each_dropped_visit_once_and_fills_the_recent_ring() -> None:
    from collector.diagnosis.traces import TraceFacts, Visit
    from collector.diagnosis.window import ServiceWindows

    windows = ServiceWindows(max_services=1)
    facts = TraceFacts(b"\x01" * 16, [Visit("a", False, 1_000_000, 1_000_000),
                                      Visit("b", True, 2_000_000, 2_000_000)], [])
    windows.record(facts, 1_000.5)
    assert windows.dropped_services == 1  # "b": once, not once per ring
    assert windows.aggregate("a", 1_000.0, 1_001.0).requests == 1
    recent = windows.recent("a", 1_000.0, 1_001.0)
    assert recent.requests == 1 and recent.self_hist.samples == 1
    assert windows.recent("b", 1_000.0, 1_001.0).requests == 0


def test_the_last_second_holds_about_a_second_of_visits_wherever_the_clock_is() -> None:
    # A 20 requests/s service, its traces finished every 50 ms: "the last second" must hold
    # about 20 visits at any moment. In 1 s buckets it held anything from 10 to 30 as the
    # clock moved through a bucket (measured live: a 23 requests/s service's window held 1
    # visit on one tick and 7 on the one before), and a fault's first slow visits were
    # judged among too few or too many.
    from collector.diagnosis.traces import TraceFacts, Visit
    from collector.diagnosis.window import ServiceWindows

    windows = ServiceWindows()
    facts = TraceFacts(b"\x01" * 16, [Visit("a", False, 1_000_000, 1_000_000)], [])
    held = []
    for i in range(200):
        now = 1_000.0 + 0.05 * i + 0.01
        windows.record(facts, now)
        if i >= 100 and i % 3 == 0:
            held.append(windows.recent("a", now - 1.0, now).requests)
    assert min(held) >= 17 and max(held) <= 23, held


def test_the_growing_recent_windows_hold_what_each_window_read_alone_holds() -> None:
    # The root cause reads the last 1, 3 and 6 s as one growing cell (each bucket merged
    # once): each must count what `recent` counts for that window alone.
    from collector.diagnosis.traces import TraceFacts, Visit
    from collector.diagnosis.window import ServiceWindows

    windows = ServiceWindows()
    for i in range(160):
        facts = TraceFacts(bytes([i]) * 16, [Visit("a", i % 7 == 0, (1 + i % 13) * 1_000_000,
                                                   (1 + i % 13) * 1_000_000)], [])
        windows.record(facts, 1_000.0 + 0.05 * i)
    now = 1_007.99
    starts = [now - 0.5 - s for s in (1, 3, 6)]
    grown = [(c.requests, c.errors, dict(c.own_hist.bins))
             for c in windows.recent_since("a", starts, now)]
    alone = [(c.requests, c.errors, dict(c.own_hist.bins))
             for c in (windows.recent("a", t0, now) for t0 in starts)]
    assert grown == alone
    assert [g[0] for g in grown] == sorted({g[0] for g in grown}) and grown[0][0] > 0


def _visits(windows, names: list[str], t0: float, seconds: float, every_s: float = 0.25,
            spread: float = 1.0) -> None:
    """Each of ``names`` visited once every ``every_s`` for ``seconds`` from ``t0``; own
    times spread over ``spread`` times 1-2 ms."""
    from collector.diagnosis.traces import TraceFacts, Visit

    for i in range(int(seconds / every_s)):
        now = t0 + i * every_s
        ms = 1 + spread * ((i * 7919) % 97) / 97
        visits = [Visit(n, False, int(ms * 1e6), int(2 * ms * 1e6), caller=names[j - 1] if j
                        else None, parent=j - 1) for j, n in enumerate(names)]
        windows.record(TraceFacts(i.to_bytes(16, "big"), visits, []), now)
        assert windows.cells <= windows.max_cells


def test_the_windows_stay_within_their_cells_and_give_up_the_oldest_history_first() -> None:
    # Five services seen all the time for 200 s: 41 fine and 40 main cells each, 405 in all,
    # against a budget's 300 cells. The oldest main buckets go (the baseline reaches back
    # about 95 s, not 200), the last 10 s of fine buckets and the last minute stay whole,
    # nothing is refused, and every cut is counted.
    from collector.diagnosis.window import ServiceWindows

    names = ["a", "b", "c", "d", "e"]
    free, capped = ServiceWindows(), ServiceWindows(max_cells=300)
    for w in (free, capped):
        _visits(w, names, 1_000.0, 200.0)
    held = sum(len(b) for ring in (capped._buckets, capped._fine) for b in ring.values())
    assert capped.cells == held <= 300 < free.cells == 405
    assert capped.cells_refused == 0 and capped.buckets_cut > 0 == free.buckets_cut
    now = 1_199.9
    for n in names:
        assert capped.recent(n, now - 9.5, now) == free.recent(n, now - 9.5, now)
        assert capped.aggregate(n, now - 60, now) == free.aggregate(n, now - 60, now)
        reach = capped.baseline(n, now - 10, 300).buckets
        assert 14 <= reach <= 20 and free.baseline(n, now - 10, 300).buckets == 38


def test_windows_too_small_for_their_minimum_refuse_visits_and_count_them() -> None:
    # 20 services in 120 cells: not even the last minute and 7 s of fine buckets fit. The
    # fine ring is cut to its last 7 s, then visits are refused, counted; the cap holds.
    from collector.diagnosis.rootcause import ERRORS_LOOK, RECENT_WINDOW_S
    from collector.diagnosis.traces import TraceAssembler
    from collector.diagnosis.window import FINE_BUCKET_S, ServiceWindows

    w = ServiceWindows(max_cells=120)
    _visits(w, [f"s{i}" for i in range(20)], 1_000.0, 90.0)
    assert w.cells <= 120 and w.cells_refused > 0
    assert w.fine_buckets_cut > 0 and w.buckets_cut > 0
    # What is kept still holds the root cause's longest look, which ends the settling lag
    # before now, and the bucket now being filled.
    longest = ERRORS_LOOK * RECENT_WINDOW_S + TraceAssembler(lambda *a: None).recent_lag_s
    assert len(w._fine) * FINE_BUCKET_S >= longest + FINE_BUCKET_S


def test_the_stated_cost_of_a_window_cell_holds() -> None:
    # `limits.WINDOW_CELL_BYTES` is what the budget's share is divided by: a cell's cost with
    # four visits a quarter-second of widely spread latencies (more bins than most services
    # fill), each service called by the one before it.
    import tracemalloc

    from collector import limits
    from collector.diagnosis.window import ServiceWindows

    w = ServiceWindows()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        _visits(w, [f"svc-{i}" for i in range(100)], 1_000.0, 15.0, every_s=0.0625,
                spread=50.0)
        per_cell = (tracemalloc.get_traced_memory()[0] - base) / w.cells
    finally:
        tracemalloc.stop()
    assert w.cells == 100 * (41 + 3)
    assert per_cell <= limits.WINDOW_CELL_BYTES
