"""The collector's named input limits, the reasons it refuses things, and the time screen.

Every refusal has a reason from `SpanReason` (one span) or `RequestReason` (a whole request);
both are counted on ``/metrics`` with a ``reason`` label, never silent. The policy for
oversized spans is to keep the span and trim it: string values longer than
``max_value_chars`` are truncated, attributes beyond ``max_attributes`` per span (or per
resource, array or kvlist) are dropped, and both are counted. What cannot be trimmed without
changing the graph is rejected instead: a service name longer than ``max_service_chars`` (it
is a node's identity) and a span whose start or end lies more than ``time_window_s`` from the
collector's clock (a broken clock, a replay, or junk).

Memory is bounded by one budget for the whole process (`MemoryLimits`, 256 MB by default): the
caps of what grows with traffic are derived from it, and `RecentSpans` recognises re-sent spans
(an exporter's retry loop, a replayed batch) in bounded memory so they are counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from collector.model import DecodeResult, SpanRecord

# OpenTelemetry SDKs' own default attribute count limit; Conway reads a handful of attributes.
MAX_ATTRIBUTES = 128
# Longer string (and bytes) attribute values, span names and status messages are truncated.
MAX_VALUE_CHARS = 4096
# A longer service.name rejects that resource's spans: truncating would merge distinct nodes.
MAX_SERVICE_CHARS = 256
# Spans starting or ending further than this from the collector clock are rejected: the default
# of ``python -m collector --span-time-window``. Replaying recorded traces over HTTP needs
# ``--span-time-window 0`` (off). A collector built in-process (tests, simulations with an
# injected clock, reference-trace replay) has the check off unless its config sets it.
TIME_WINDOW_S = 86_400.0


class SpanReason:
    """Why one span was refused (label values of ``conway_spans_rejected_by_reason_total``)."""

    INVALID_ID = "invalid_id"
    END_BEFORE_START = "end_before_start"
    OUT_OF_TIME_WINDOW = "timestamp_out_of_window"
    TOO_DEEP = "value_too_deep"
    SERVICE_NAME_TOO_LONG = "service_name_too_long"
    INVALID_FIELD = "invalid_field"


class RequestReason:
    """Why a whole request was refused (``conway_requests_rejected_total{reason}``)."""

    MALFORMED = "malformed"
    TOO_LARGE = "body_too_large"
    MEDIA_TYPE = "unsupported_media_type"
    ENCODING = "unsupported_encoding"
    UNAUTHORIZED = "unauthorized"
    OVERLOADED = "overloaded"
    BODY_TIMEOUT = "body_timeout"
    DISCONNECTED = "client_disconnected"
    ALL_SPANS_REJECTED = "all_spans_rejected"


@dataclass(frozen=True, slots=True)
class SpanLimits:
    """Per-span caps applied by the decoders; ``time_window_s`` by the receiver (0 = off, the
    in-process default; the command line's default is `TIME_WINDOW_S`)."""

    max_attributes: int = MAX_ATTRIBUTES
    max_value_chars: int = MAX_VALUE_CHARS
    max_service_chars: int = MAX_SERVICE_CHARS
    time_window_s: float = 0.0


DEFAULT_LIMITS = SpanLimits()


def count_reason(result: DecodeResult, reason: str, n: int = 1) -> None:
    result.reasons[reason] = result.reasons.get(reason, 0) + n


def screen_times(result: DecodeResult, now: float, window_s: float, max_errors: int) -> None:
    """Reject (in place) spans starting or ending more than ``window_s`` from ``now``."""
    if window_s <= 0 or not result.spans:
        return
    lo = int((now - window_s) * 1e9)
    hi = int((now + window_s) * 1e9)
    kept: list[SpanRecord] = []
    for span in result.spans:
        if lo <= span.start_ns <= hi and lo <= span.end_ns <= hi:
            kept.append(span)
        else:
            result.rejected += 1
            count_reason(result, SpanReason.OUT_OF_TIME_WINDOW)
            if len(result.errors) < max_errors:
                result.errors.append(
                    f"span {span.span_id.hex()} of {span.service!r:.80}: start "
                    f"{span.start_ns / 1e9:.0f} / end {span.end_ns / 1e9:.0f} (epoch s) is more "
                    f"than {window_s:g} s from the collector clock ({now:.0f}); fix the "
                    f"sender's clock"
                )
    if len(kept) != len(result.spans):
        result.spans = kept


# -- the memory budget --------------------------------------------------------------------------
# One budget for the whole process (``--memory-budget-mb``); `MemoryLimits.from_budget` derives
# from it every cap of what grows with traffic (pending traces and spans, waiting pairing halves,
# the sets that catch re-sent spans, the cells of the diagnosis' windows). The costs below were
# measured with tracemalloc, spans as decoded by `collector.otlp` (resource attributes shared by
# the spans of a request):
#
# - a decoded span is 474 B with 4 attributes (bench shop spans), 708 B with 8 (an SDK's HTTP
#   server span); a pending trace holds it for 32 B more (its list slot and, per trace of 8
#   spans, its entry). Wider spans are slimmed to what analysis reads before they wait, so 1 KiB
#   per pending span covers the widest span kept as sent plus allocator slack;
# - a waiting pairing half is 164 B of store entry besides its span (the same object as the
#   pending trace's, unless the diagnosis sampled the trace out or the span was slimmed);
# - a remembered (trace id, span id) is 88 B (a 64-bit hash in a set);
# - a service's cell in one bucket of the diagnosis' windows (`collector.diagnosis.window`:
#   counts, three latency histograms, callers, sample trace ids) is 1.9 KB with one visit,
#   2.3 KB with four of widely spread latencies (a dozen bins a histogram). The windows hold
#   a cell per service and 5 s bucket over the retention (900 s) and per quarter-second over
#   the last 10 s: 222 cells for a service seen all the time, 444 MB for 2,000 such services,
#   so they get a share of the budget like the rest and, when full, keep less history.
# Links kept per span (a batch consumer's producers); more are not read.
MAX_LINKS = 128
MEMORY_BUDGET_MB = 256
MIB = 1 << 20
MIN_MEMORY_BUDGET_MB = 128
# Held whatever the traffic, taken off the budget first: the interpreter and libraries (44-50 MiB
# RSS idle), the graph's and the diagnosis' other statistics, and the two bodies being decoded.
# The graph's statistics grow with its nodes and edges (a ring of slots per key) up to its own
# caps (``--max-nodes``, ``--max-edges``), not derived from the budget: 80-470 KiB per node or
# edge over the default 900 s retention (1-20 calls/s, measured with tracemalloc), so the shop's
# dozen services fit in the reserve, 2,000 busy ones do not (``bench/soak.py --services 2000``).
RESERVED_BYTES = 80 * MIB
# Request bodies read or waiting to be decoded (the receiver's ``--max-inflight-bytes``): this
# share of the budget, 64 MiB of the default 256.
INFLIGHT_SHARE = 0.25
PENDING_SPAN_BYTES = 1024
PENDING_TRACE_BYTES = 256  # a pending trace's own record, list and entries, with one span
PAIRING_ITEM_BYTES = 768
SEEN_SPAN_BYTES = 96
WINDOW_CELL_BYTES = 2_560
# How what remains after the reserve and the bodies in flight is shared out.
PENDING_SHARE = 0.35
PAIRING_SHARE = 0.20
SEEN_SHARE = 0.20  # two sets of equal size: the assembler's and the pairing store's
WINDOW_SHARE = 0.25  # 28 MiB of the default budget: 11,468 cells, 51 services' full history
# Never more spans per trace than this (a trace that has more is analysed without the rest).
MAX_SPANS_PER_TRACE = 1_000


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """The caps derived from one memory budget (``from_budget``); see the costs above."""

    budget_bytes: int
    max_inflight_bytes: int
    max_pending_spans: int  # spans in pending traces, all traces together
    max_traces: int  # pending traces
    max_spans_per_trace: int
    pairing_max_items: int  # waiting pairing halves
    max_seen_spans: int  # span keys each duplicate-catching set remembers (two such sets)
    window_cells: int  # (service, bucket) cells the diagnosis' windows hold, both rings

    @classmethod
    def from_budget(cls, budget_mb: float = MEMORY_BUDGET_MB) -> MemoryLimits:
        if not budget_mb >= MIN_MEMORY_BUDGET_MB:  # also refuses NaN
            raise ValueError(f"memory budget must be at least {MIN_MEMORY_BUDGET_MB} MB (the "
                             f"process needs about {RESERVED_BYTES // MIB} MB whatever the "
                             f"traffic), got {budget_mb}")
        budget = int(budget_mb * MIB)
        inflight = int(budget * INFLIGHT_SHARE)
        rest = budget - RESERVED_BYTES - inflight
        # At most one pending trace per 4 pending spans, so each span carries a quarter of one.
        spans = int(rest * PENDING_SHARE) // (PENDING_SPAN_BYTES + PENDING_TRACE_BYTES // 4)
        return cls(
            budget_bytes=budget,
            max_inflight_bytes=inflight,
            max_pending_spans=spans,
            max_traces=spans // 4,
            max_spans_per_trace=min(MAX_SPANS_PER_TRACE, spans // 16),
            pairing_max_items=int(rest * PAIRING_SHARE) // PAIRING_ITEM_BYTES,
            max_seen_spans=int(rest * SEEN_SHARE) // (2 * SEEN_SPAN_BYTES),
            window_cells=int(rest * WINDOW_SHARE) // WINDOW_CELL_BYTES,
        )


DEFAULT_MEMORY = MemoryLimits.from_budget()


class RecentSpans:
    """The spans seen lately, by (trace id, span id), so a re-sent copy (an exporter's retry, a
    replayed batch) is recognised and dropped rather than counted twice. Bounded: two
    generations of at most ``capacity // 2`` keys each (a key is the 64-bit hash of the pair);
    when the newer one fills, the older is forgotten. A key seen again moves to the newer
    generation, so a retry loop over fewer than ``capacity // 2`` spans stays recognised however
    long it lasts; spans further back than that may be taken for new."""

    __slots__ = ("per_generation", "_new", "_old")

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"recent spans: capacity must be >= 2, got {capacity}")
        self.per_generation = capacity // 2
        self._new: set[int] = set()
        self._old: set[int] = set()

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def drop_seen(self, spans: Sequence[SpanRecord], min_kind: int = 0
                  ) -> tuple[Sequence[SpanRecord], int]:
        """``spans`` without those seen lately (the same sequence when none was), and how many
        were dropped; all are remembered as seen now. Spans of a kind below ``min_kind`` pass
        unremembered. (``seen`` for each span, in one loop: this runs for every span.)"""
        new, old, cap = self._new, self._old, self.per_generation
        out: list[SpanRecord] | None = None
        dropped = 0
        for i, span in enumerate(spans):
            if span.kind >= min_kind:
                key = hash((span.trace_id, span.span_id))
                if key in new:
                    again = True
                else:
                    again = key in old
                    if len(new) >= cap:
                        old = self._old = new
                        new = self._new = set()
                    new.add(key)
                if again:
                    if out is None:
                        out = list(spans[:i])
                    dropped += 1
                    continue
            if out is not None:
                out.append(span)
        return (spans if out is None else out), dropped

    def seen(self, trace_id: bytes, span_id: bytes) -> bool:
        """Whether this span was seen lately; it is remembered as seen now either way."""
        key = hash((trace_id, span_id))
        new = self._new
        if key in new:
            return True
        again = key in self._old
        if len(new) >= self.per_generation:
            self._old = new
            new = self._new = set()
        new.add(key)
        return again
