"""The trace assembler under re-sent and endless traffic, with an injected clock (no sleeping):
a trace stays open at most ``max_open_s``, re-sent spans are dropped and counted (pending or
already finished), all pending traces together hold at most ``max_pending_spans`` spans, and
wide spans wait slimmed to what analysis reads."""

from __future__ import annotations

import pytest

from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.traces import MAX_TRACE_OPEN_S, TraceAssembler, analyze
from collector.limits import DEFAULT_MEMORY, MemoryLimits
from collector.model import Attributes, SpanKind, SpanRecord

MS = 1_000_000
RES: Attributes = {"service.name": "a"}
T0 = 1_800_000_000.0


def span(tid: int, sid: int, parent: int = 0, service: str = "a",
         kind: int = SpanKind.SERVER, attrs: Attributes | None = None,
         error: bool = False, name: str = "op") -> SpanRecord:
    return SpanRecord(tid.to_bytes(16, "big"), sid.to_bytes(8, "big"),
                      parent.to_bytes(8, "big") if parent else b"", service, name, kind,
                      0, 10 * MS, error, dict(attrs or {}), RES)


class Finished:
    """The ``on_trace`` callback: what finished, in order."""

    def __init__(self) -> None:
        self.traces: list[tuple[list[int], float, int]] = []

    def __call__(self, spans: list[SpanRecord], first_seen: float, weight: int) -> None:
        self.traces.append(([int.from_bytes(s.span_id, "big") for s in spans], first_seen,
                            weight))


def test_a_trace_that_never_goes_quiet_is_finished_at_its_maximum_age() -> None:
    done = Finished()
    asm = TraceAssembler(done, quiet_s=1.5, max_open_s=20.0)
    # One new span of trace 1 every second for 45 s: never quiet for 1.5 s.
    for i in range(45):
        asm.add([span(1, i + 1)], now=T0 + i)
        for _, first_seen, _ in done.traces:
            assert first_seen >= T0
        assert all(T0 + i - p.first_seen < 20.0 for p in asm._pending.values())
    # Finished at the first span 20 s after the trace's first, twice; counted as early.
    assert [(spans[0], spans[-1], first) for spans, first, _ in done.traces] == [
        (1, 20, T0), (21, 40, T0 + 20)]
    assert asm.traces_finished_max_age == 2
    assert asm.traces_finished_early == 2
    assert asm.spans_pending == 5  # the continuation since T0 + 40
    asm.flush(T0 + 44 + 1.5)
    assert [len(s) for s, _, _ in done.traces] == [20, 20, 5]  # every span analysed once
    assert asm.spans_pending == 0 and len(asm) == 0


def test_the_default_maximum_age_is_named_and_bounded() -> None:
    assert 10.0 <= MAX_TRACE_OPEN_S <= 30.0
    assert TraceAssembler(Finished()).max_open_s == MAX_TRACE_OPEN_S
    with pytest.raises(ValueError):
        TraceAssembler(Finished(), max_open_s=0.0)


def test_re_sent_spans_are_dropped_while_pending_and_after_the_trace_finished() -> None:
    done = Finished()
    asm = TraceAssembler(done, quiet_s=1.5)
    batch = [span(7, 1), span(7, 2, parent=1, kind=SpanKind.CLIENT)]
    asm.add(batch, now=T0)
    asm.add(batch, now=T0 + 1.0)  # an exporter's retry, while the trace is pending
    assert asm.spans_duplicate == 2 and asm.spans_pending == 2
    asm.flush(T0 + 2.5)  # quiet since T0: the first copy arrived then, the retry added nothing
    assert done.traces == [([1, 2], T0, 1)]
    for k in range(1, 50):  # a retry loop long after: nothing new is pending or analysed
        asm.add(batch, now=T0 + 10.0 * k)
    assert len(asm) == 0 and asm.spans_pending == 0
    assert len(done.traces) == 1
    assert asm.spans_duplicate == 2 + 2 * 49
    # A late span of the finished trace (a new span id) is not a duplicate.
    asm.add([span(7, 3, parent=1)], now=T0 + 600.0)
    assert len(asm) == 1 and asm.spans_duplicate == 2 + 2 * 49


def test_re_sent_spans_of_a_trace_finished_at_its_maximum_age_stay_dropped() -> None:
    done = Finished()
    asm = TraceAssembler(done, quiet_s=1.5, max_open_s=10.0)
    first = [span(3, i) for i in range(1, 4)]
    for i in range(12):
        # The same three spans again and again, plus one new span each second.
        asm.add([*first, span(3, 100 + i)], now=T0 + i)
    asm.flush(T0 + 20.0)
    analysed = [sid for spans, _, _ in done.traces for sid in spans]
    assert sorted(analysed) == [1, 2, 3, *range(100, 112)]  # each span once, in 2 pieces
    assert asm.traces_finished_max_age == 1
    assert asm.spans_duplicate == 3 * 11


def test_all_pending_traces_together_hold_at_most_max_pending_spans() -> None:
    done = Finished()
    asm = TraceAssembler(done, quiet_s=100.0, max_traces=1000, max_pending_spans=10)
    for t in range(1, 6):  # five traces of three spans, one a second
        asm.add([span(t, 1), span(t, 2, parent=1), span(t, 3, parent=1)], now=T0 + t)
        assert asm.spans_pending <= 10
    # The longest-idle traces were finished early, whole, and counted.
    assert [len(s) for s, _, _ in done.traces] == [3, 3]
    assert asm.traces_finished_span_cap == 2 and asm.traces_finished_early == 2
    assert asm.spans_pending == 9 and len(asm) == 3
    # One trace alone past the cap: finished and continued, never more than the cap held.
    solo = TraceAssembler(done, quiet_s=100.0, max_pending_spans=4)
    solo.add([span(9, i) for i in range(1, 11)], now=T0)
    assert solo.spans_pending == 2 and solo.traces_finished_span_cap == 2


def test_wide_spans_wait_with_what_analysis_reads_and_analyse_the_same() -> None:
    wide: Attributes = {f"http.extra.{i}": "x" * 100 for i in range(40)}
    wide.update({"peer.service": "bank", "error.type": "timeout"})
    spans = [span(5, 1, service="pay"),
             span(5, 2, parent=1, service="pay", kind=SpanKind.CLIENT, attrs=wide, error=True,
                  name="POST " + "y" * 1000)]
    got: list[list[SpanRecord]] = []
    asm = TraceAssembler(lambda s, f, w: got.append(s), quiet_s=1.0)
    asm.add(spans, now=T0)
    asm.flush(T0 + 2.0)
    (kept,) = got
    assert kept[1].attributes == {"peer.service": "bank", "error.type": "timeout"}
    assert kept[1].name == "" and kept[0] is spans[0]  # a narrow span waits as it came
    assert analyze(kept) == analyze(spans)


def test_a_replayed_batch_is_analysed_once() -> None:
    def batch(tid: int) -> list[SpanRecord]:
        return [span(tid, 1, service="front"),
                span(tid, 2, parent=1, service="front", kind=SpanKind.CLIENT,
                     attrs={"peer.service": "pay"}),
                span(tid, 3, parent=2, service="pay", error=True)]

    once, twice = TraceDiagnosis(), TraceDiagnosis()
    for i in range(20):
        spans = batch(i + 1)
        once.consume(spans, T0 + i)
        twice.consume(spans, T0 + i)
        twice.consume(spans, T0 + i + 0.5)  # the retry
    for d in (once, twice):
        d.flush(T0 + 60.0)
    for name in ("front", "pay"):
        assert twice.windows.aggregate(name, T0 - 10, T0 + 60) == \
            once.windows.aggregate(name, T0 - 10, T0 + 60)
    c = twice.counters()
    assert c["spans_duplicate"] == 60 and c["traces_finished"] == 20
    assert once.counters()["spans_duplicate"] == 0


def test_caps_come_from_the_memory_budget() -> None:
    diag = TraceDiagnosis()
    a = diag.assembler
    assert (a.max_traces, a.max_spans_per_trace, a.max_pending_spans) == (
        DEFAULT_MEMORY.max_traces, DEFAULT_MEMORY.max_spans_per_trace,
        DEFAULT_MEMORY.max_pending_spans)
    big = TraceDiagnosis(memory=MemoryLimits.from_budget(1024))
    assert big.assembler.max_pending_spans > 4 * a.max_pending_spans
    assert diag.counters()["memory_budget_bytes"] == 256 * 2 ** 20
    # The windows too: the default budget holds the demo's ~20 services' whole retention.
    assert diag.windows.max_cells == DEFAULT_MEMORY.window_cells > 20 * 222
    assert big.windows.max_cells > 4 * diag.windows.max_cells
    assert diag.counters()["max_window_cells"] == DEFAULT_MEMORY.window_cells
