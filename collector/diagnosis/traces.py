"""Bounded trace assembly and per-trace analysis: error origins, victims, self time.

Spans are buffered per ``trace_id`` and a trace is finished ``quiet_s`` seconds after its last
span arrived (collector clock, passed in; ``flush(now)`` finishes what is due), as soon as it is
*whole* when the evaluation asks (``finish_whole``, below), or, when spans
keep arriving, at the first one ``MAX_TRACE_OPEN_S`` or more after its first span (finished
early and counted; later spans start a continuation). Memory is bounded by caps derived from
the memory budget (`collector.limits.MemoryLimits`): ``MAX_TRACES`` pending traces and
``MAX_PENDING_SPANS`` spans in all of them (past either, the longest-idle trace is finished
early, partial, and counted), ``MAX_SPANS_PER_TRACE`` (further spans are dropped and counted);
a span with many attributes waits with only those analysis reads. A span seen lately (the same
trace id and span id, pending or in a finished trace; ``collector.limits.RecentSpans``) is a
re-sent copy, dropped and counted (``spans_duplicate``), so a replay is not analysed twice.

Head sampling (``add(..., keep=p)`` with ``p < 1``): a span whose trace is not already pending
starts one only when its trace id's hash (``keep_hash``) falls below ``p``; otherwise it is
dropped and counted (``spans_sampled_out``; ``traces_sampled_out`` counts the dropped root
spans). The decision depends on the trace id alone, so every span of a trace gets the same one
in any batch or replica while ``p`` holds; spans of a trace already pending are always kept,
and the trace carries the integer weight ``1/p`` (rounded stochastically) it entered with.

A trace is whole when nothing in it says a span is still to come: it has a root (a span with no
parent), every parent a span names is there, and every CLIENT span has its SERVER child unless
it calls a database (``DATABASE_ATTRIBUTES``: nothing instrumented answers it) or was refused
(``refused``: no connection, so no callee to answer; a timed-out call still waits). Each process
exports its spans in the order they end, and a synchronous call's spans end before their
parent's, so a trace whose root and every callee's answer arrived has nothing more to send;
the quiet wait is then only latency. ``finish_whole(now)`` finishes such traces once no span
arrived for ``settle_s`` (a batch that straddles two exports); a call that got no answer by
timing out, a call to an uninstrumented peer or a parent lost upstream keeps the trace waiting
for ``quiet_s`` as before. A span of a finished trace that still arrives (an asynchronous child
ending after its parent) starts a continuation, as after ``max_open_s``.

``analyze`` turns one finished trace into ``TraceFacts``:

- an *origin* is an ERROR span none of whose children failed. A CLIENT origin blames the
  callee, not the caller: the peer the span names (``peer_name``) when no SERVER child exists
  — a timeout, refused connection or uninstrumented dependency; when the SERVER child exists
  and did not fail, the client timed out on a slow callee, and the origin (marked ``timeout``)
  is where the time went down the callee's critical path. Walking up from an origin through
  failed ancestors gives its *victims* (services whose SERVER span failed because of it); the
  first ancestor that did not fail *absorbed* the error (an optional dependency with a
  fallback, a retry). A span whose parent was lost is adopted by the span enclosing it.
- a *visit* is one service handling one request: its exclusive (self) time is the sum of its
  spans' durations minus the union of their children's intervals. A CLIENT span's own time
  (network, queueing) goes to the callee, and is also kept apart (``Visit.net_ns``): a caller
  starved of CPU reads its answers late, which lifts that part of every callee's time alike;
  a CLIENT span with no SERVER child is a visit of the callee by itself (a database, an
  external API, or a service that never answered).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from collector.limits import DEFAULT_MEMORY, RecentSpans
from collector.model import SpanRecord
from collector.ports import PortMap, peer_of
from collector.vocabulary import (
    CALLEE_KINDS,
    CALLER_KINDS,
    DATABASE_ATTRIBUTES,
    MESSAGING_DESTINATION_ATTRIBUTES,
    PEER_ADDRESS_ATTRIBUTES,
    PEER_NAME_ATTRIBUTES,
    PEER_PORT_ATTRIBUTES,
    RESPONSE_STATUS_ATTRIBUTES,
    queue_name,
)
from collector.vocabulary import CLIENT as _CLIENT
from collector.vocabulary import CONSUMER as _CONSUMER
from collector.vocabulary import PRODUCER as _PRODUCER
from collector.vocabulary import SERVER as _SERVER

QUIET_S = 1.5
# A whole trace is finished once no span arrived for this long (``finish_whole``); the recent
# window of the root-cause step ends this long ago (``recent_lag_s``).
SETTLE_S = 0.25
# The caps of the default memory budget (`collector.limits.MemoryLimits`, 256 MB): pending
# traces, spans per trace, spans pending in all traces together, and the span keys remembered
# to catch re-sent spans.
MAX_TRACES = DEFAULT_MEMORY.max_traces
MAX_SPANS_PER_TRACE = DEFAULT_MEMORY.max_spans_per_trace
MAX_PENDING_SPANS = DEFAULT_MEMORY.max_pending_spans
MAX_SEEN_SPANS = DEFAULT_MEMORY.max_seen_spans
# A trace still receiving spans this long after its first one is finished (early, counted):
# longer than any trace whose exporters batch every few seconds, short enough that a trace id
# re-sent for ever (an exporter's retry loop, a replayed batch re-stamped) cannot keep it open.
MAX_TRACE_OPEN_S = 20.0

# Head sampling: the last 8 bytes of a trace id (all of a 64-bit Zipkin id) times an odd
# constant mod 2**64 (Fibonacci hashing). A bijection, so random ids stay uniform, and
# sequential ids (test generators, some legacy tracers) are spread evenly too.
_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
# What analysis reads of a span's attributes: a pending span with more attributes than
# _KEEP_AS_IS (or a longer name) waits with these only (and no name).
_ANALYSED_KEYS = (*PEER_NAME_ATTRIBUTES, *PEER_PORT_ATTRIBUTES, *PEER_ADDRESS_ATTRIBUTES,
                  *MESSAGING_DESTINATION_ATTRIBUTES, *RESPONSE_STATUS_ATTRIBUTES, "error.type")
_KEEP_AS_IS = 8
_KEEP_AS_IS_NAME = 256


def peer_name(span: SpanRecord, ports: PortMap | None = None) -> str | None:
    """The callee a CLIENT span names, as the graph names it (`collector.ports.peer_of`); for
    a PRODUCER, the queue it publishes to (a producer that cannot publish blames it)."""
    if span.kind == _PRODUCER:
        queue = queue_name(span.attributes)
        if queue is not None:
            return queue
    return peer_of(span.attributes, ports)


@dataclass(slots=True)
class Visit:
    """One service handling one request inside a trace."""

    service: str
    error: bool
    self_ns: int
    incl_ns: int
    client_only: bool = False  # seen only from the caller's CLIENT span
    caller: str | None = None
    parent: int = -1  # index of the caller's visit in ``TraceFacts.visits`` (-1: none)
    # Of ``self_ns``, the caller's CLIENT span's own time (network, queueing, and the caller
    # reading the answer late): ``self_ns - net_ns`` is the time inside this service's spans.
    net_ns: int = 0


@dataclass(slots=True)
class Origin:
    """Where one failure started, who it spread to, and who absorbed it."""

    service: str
    client_only: bool
    caller: str | None
    victims: list[str] = field(default_factory=list)
    absorbed_by: str | None = None
    timeout: bool = False  # the callee answered OK, too late: slowness, blamed where it was
    # A call with no answer (no SERVER span) that timed out rather than being refused: a
    # starved or hung callee, not necessarily a stopped one (see ``timed_out``).
    no_answer_timeout: bool = False


@dataclass(slots=True)
class TraceFacts:
    trace_id: bytes
    visits: list[Visit]
    origins: list[Origin]
    # Calls whose server side lay outside its client span by more than CLOCK_SKEW_MIN_NS:
    # the two processes' clocks disagree (their spans were shifted, see `_clock_shifts`).
    skewed: int = 0


def keep_hash(trace_id: bytes) -> float:
    """Where a trace id falls in [0, 1): the trace is kept at keep fraction ``p`` when this is
    below ``p`` (the same test ``TraceAssembler.add`` makes, in integers)."""
    return ((int.from_bytes(trace_id[-8:], "big") * _MIX) & _MASK) / 2 ** 64


class TraceAssembler:
    """Buffers spans per trace and hands each finished trace to
    ``on_trace(spans, first_seen, weight)``; ``weight`` is 1 unless the trace was kept by head
    sampling (then about ``1/p``, see the module docstring)."""

    def __init__(
        self,
        on_trace: Callable[[list[SpanRecord], float, int], None],
        quiet_s: float = QUIET_S,
        max_traces: int = MAX_TRACES,
        max_spans_per_trace: int = MAX_SPANS_PER_TRACE,
        max_pending_spans: int = MAX_PENDING_SPANS,
        max_open_s: float = MAX_TRACE_OPEN_S,
        max_seen_spans: int = MAX_SEEN_SPANS,
        settle_s: float = SETTLE_S,
    ) -> None:
        if settle_s < 0:
            raise ValueError("trace assembler: settle_s must be >= 0")
        if quiet_s < 0 or max_open_s <= 0 or min(max_traces, max_spans_per_trace,
                                                 max_pending_spans, max_seen_spans) < 1:
            raise ValueError("trace assembler: quiet_s must be >= 0, max_open_s > 0 and the "
                             "limits >= 1")
        self.on_trace = on_trace
        self.quiet_s = quiet_s
        self.settle_s = min(settle_s, quiet_s)
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.max_pending_spans = max_pending_spans
        self.max_open_s = max_open_s
        # Ordered by last arrival, so the traces due first are at the front.
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()
        self._recent = RecentSpans(max(2, max_seen_spans))
        self.spans_pending = 0
        self.traces_finished = 0
        self.traces_finished_whole = 0  # before their quiet time, by ``finish_whole``
        self.traces_finished_early = 0  # all of the three below, and the trace cap's
        self.traces_finished_max_age = 0
        self.traces_finished_span_cap = 0  # the oldest, for the pending-spans cap
        self.spans_dropped_trace_full = 0
        self.spans_duplicate = 0
        self.spans_sampled_out = 0
        self.traces_sampled_out = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, spans: Iterable[SpanRecord], now: float, keep: float = 1.0) -> None:
        """Buffer ``spans``; with ``keep`` < 1, only traces whose ``keep_hash`` is below it
        start (head sampling)."""
        traces = self._pending
        max_spans = self.max_spans_per_trace
        max_open = self.max_open_s
        seen = self._recent.seen
        below = whole = frac_below = 0
        sampling = keep < 1.0
        if sampling:
            below = max(1, int(keep * 2 ** 64))  # keep at least the lowest hash
            inverse = 2 ** 64 / below
            whole = int(inverse)
            # A kept trace's hash is uniform in [0, below): below `frac_below` (a share
            # frac(1/p) of them) it weighs one more, so the weights average 1/p exactly.
            frac_below = int((inverse - whole) * below)
        for span in spans:
            trace_id = span.trace_id
            pending = traces.get(trace_id)
            weight = 1
            if pending is None and sampling:
                h = (int.from_bytes(trace_id[-8:], "big") * _MIX) & _MASK
                if h >= below:
                    self.spans_sampled_out += 1
                    if not span.parent_span_id:
                        self.traces_sampled_out += 1
                    continue
                weight = whole + 1 if h < frac_below else whole
            if seen(trace_id, span.span_id):
                self.spans_duplicate += 1  # re-sent: pending, or part of a finished trace
                continue
            if pending is not None and now - pending.first_seen >= max_open:
                # Still receiving spans at its maximum age (a trace id reused, or re-stamped
                # replays): finish what it has; later spans start a continuation.
                del traces[trace_id]
                self.traces_finished_early += 1
                self.traces_finished_max_age += 1
                self._finish(pending)
                weight = pending.weight
                pending = None
            if pending is None:
                if len(traces) >= self.max_traces:
                    # Finish the longest-idle trace now (partial) rather than grow without bound.
                    _, oldest = traces.popitem(last=False)
                    self.traces_finished_early += 1
                    self._finish(oldest)
                pending = _Pending([], now, now, weight)
                traces[trace_id] = pending
            elif pending.last_seen != now:
                pending.last_seen = now
                traces.move_to_end(trace_id)
            if len(pending.spans) >= max_spans:
                self.spans_dropped_trace_full += 1
                continue
            if self.spans_pending >= self.max_pending_spans:
                # All traces together hold as many spans as the budget allows: finish the
                # longest-idle one (each pending trace holds at least one span).
                _, oldest = traces.popitem(last=False)
                self.traces_finished_early += 1
                self.traces_finished_span_cap += 1
                self._finish(oldest)
                if oldest is pending:
                    pending = traces[trace_id] = _Pending([], now, now, pending.weight)
            attrs = span.attributes
            if len(attrs) > _KEEP_AS_IS or len(span.name) > _KEEP_AS_IS_NAME:
                span = _slim(span)
            pending.spans.append(span)
            self.spans_pending += 1
        self.flush(now)

    def flush(self, now: float) -> int:
        """Finish every trace quiet for ``quiet_s``; returns how many."""
        done = 0
        while self._pending:
            trace_id, pending = next(iter(self._pending.items()))
            if now - pending.last_seen < self.quiet_s:
                break
            del self._pending[trace_id]
            self._finish(pending)
            done += 1
        return done

    @property
    def recent_lag_s(self) -> float:
        """How long ago the newest traces a recent window can count on ended: ``settle_s``
        plus one more, for the traces still waiting for their last export."""
        return min(self.quiet_s, 2 * self.settle_s)

    def finish_whole(self, now: float) -> int:
        """Finish every pending trace that is whole (module doc) and received nothing for
        ``settle_s``; returns how many. Each trace is checked again only when it grew."""
        horizon = now - self.settle_s
        due: list[bytes] = []
        for trace_id, pending in self._pending.items():  # oldest arrival first
            if pending.last_seen > horizon:
                break
            n = len(pending.spans)
            if pending.checked == n:
                continue
            pending.checked = n
            if _whole(pending.spans):
                due.append(trace_id)
        for trace_id in due:
            pending = self._pending.pop(trace_id)
            self.traces_finished_whole += 1
            self._finish(pending)
        return len(due)

    def _finish(self, pending: _Pending) -> None:
        self.traces_finished += 1
        self.spans_pending -= len(pending.spans)
        self.on_trace(pending.spans, pending.first_seen, pending.weight)


@dataclass(slots=True)
class _Pending:
    spans: list[SpanRecord]
    first_seen: float
    last_seen: float
    weight: int
    checked: int = 0  # spans it held when ``finish_whole`` last found it not whole


def _whole(spans: list[SpanRecord]) -> bool:
    """A root, every named parent present, every CLIENT span answered by a SERVER child
    unless it calls a database (see the module doc)."""
    ids = {s.span_id for s in spans}
    answered: set[bytes] = set()
    root = False
    for s in spans:
        parent = s.parent_span_id
        if not parent:
            root = True
        elif parent not in ids:
            return False
        elif s.kind == _SERVER:
            answered.add(parent)
    if not root:
        return False
    for s in spans:
        if s.kind == _CLIENT and s.span_id not in answered:
            attrs = s.attributes
            if not any(k in attrs for k in DATABASE_ATTRIBUTES) and not refused(s):
                return False
    return True


def _slim(span: SpanRecord) -> SpanRecord:
    """A wide span, trimmed to what analysis reads before it waits in a pending trace, so a
    pending span weighs about what `collector.limits.PENDING_SPAN_BYTES` assumes."""
    attrs = span.attributes
    kept = {k: attrs[k] for k in _ANALYSED_KEYS if k in attrs}
    return SpanRecord(span.trace_id, span.span_id, span.parent_span_id, span.service, "",
                      span.kind, span.start_ns, span.end_ns, span.error, kept, span.resource,
                      span.status_message)


def _union_ns(intervals: list[tuple[int, int]], lo: int, hi: int) -> int:
    total = 0
    cur_s = cur_e = None
    for s, e in sorted(intervals):
        s, e = max(s, lo), min(e, hi)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


def _server_child(kids: list[SpanRecord] | None) -> SpanRecord | None:
    if kids:
        for c in kids:
            if c.kind == _SERVER or c.kind == _CONSUMER:
                return c
    return None


def analyze(spans: list[SpanRecord], ports: PortMap | None = None) -> TraceFacts:
    """Error origins, victims, absorbers and per-visit self time of one finished trace."""
    # This runs once per finished trace on the ingest path: loops are written out by hand
    # (no per-span helper calls or sorts where a trace's shape makes them unnecessary).
    by_id: dict[bytes, SpanRecord] = {s.span_id: s for s in spans}
    if len(by_id) != len(spans):  # duplicate span ids: the first one wins
        by_id = {}
        for s in spans:
            by_id.setdefault(s.span_id, s)
    parent_of, children = _parents(by_id)
    order = _topological(by_id, children, parent_of)
    shift, skewed = _clock_shifts(order, by_id, parent_of)
    if shift:
        # Another process' clock disagrees with its caller's: analyse its spans in the
        # caller's time (durations unchanged), so overlaps and self time come out right.
        by_id = {sid: replace(sp, start_ns=sp.start_ns + shift[sid],
                              end_ns=sp.end_ns + shift[sid]) if sid in shift else sp
                 for sid, sp in by_id.items()}
        parent_of, children = _parents(by_id)
        order = _topological(by_id, children, parent_of)

    # Visits: a SERVER span (or a root) opens one; same-service descendants join it.
    visit_of: dict[bytes, int] = {}
    visits: list[Visit] = []
    net: dict[bytes, int] = {}  # a CLIENT span's own time, waiting for its SERVER child's visit
    any_error = False
    for s in order:
        sid = s.span_id
        kind = s.kind
        error = s.error
        if error:
            any_error = True
        pid = parent_of.get(sid)
        parent = by_id[pid] if pid is not None else None
        kids = children.get(sid)
        start, end = s.start_ns, s.end_ns
        dur = end - start if end > start else 0
        if not kids:
            excl = dur
        elif len(kids) == 1:  # the union of one interval, clamped to this span
            k = kids[0]
            k_start = k.start_ns if k.start_ns > start else start
            k_end = k.end_ns if k.end_ns < end else end
            excl = dur - (k_end - k_start) if k_end > k_start else dur
        else:
            excl = dur - _union_ns([(c.start_ns, c.end_ns) for c in kids], start, end)
        if kind == _CLIENT or kind == _PRODUCER:
            callee = _server_child(kids)
            if callee is None:
                name = peer_name(s, ports)
                if name is not None and name != s.service:
                    visits.append(Visit(name, error, excl, dur, True, s.service,
                                        visit_of.get(pid, -1) if pid is not None else -1))
                    continue
            # The client's own time (network, queueing) belongs to the callee's visit,
            # which is created when the SERVER child is reached; park it on the client span.
            idx = visit_of[sid] = _caller_visit(s, parent, visit_of, visits)
            if callee is not None:
                net[callee.span_id] = excl
            else:
                visits[idx].self_ns += excl
            continue
        if kind == _SERVER or kind == _CONSUMER or parent is None or parent.service != s.service:
            n = net.pop(sid, 0) if net else 0
            visits.append(Visit(s.service, error, excl + n, dur, False,
                                parent.service if parent else None,
                                visit_of.get(pid, -1) if pid is not None else -1, n))
            visit_of[sid] = len(visits) - 1
        else:  # same service as its parent: joins the parent's visit when it has one
            joined = visit_of.get(parent.span_id)
            if joined is None or visits[joined].service != s.service:
                joined = _caller_visit(s, parent, visit_of, visits)
            visit_of[sid] = joined
            visits[joined].self_ns += excl

    origins: list[Origin] = []
    trace_id = spans[0].trace_id if spans else b""
    if not any_error:
        return TraceFacts(trace_id, visits, origins, skewed)
    for s in order:
        if not s.error or any(c.error for c in children.get(s.span_id, ())):
            continue
        blamed, client_only, caller, timeout = s.service, False, None, False
        no_answer_timeout = False
        if s.kind in CALLER_KINDS:
            callee = _server_child(children.get(s.span_id))
            if callee is not None:
                # The callee succeeded but the client gave up: follow where its time went.
                slow = _slowest(callee, children)
                if slow.kind in CALLER_KINDS and _server_child(children.get(slow.span_id)) is None:
                    name = peer_name(slow, ports) or slow.service
                else:
                    name = slow.service
                timeout = True
            else:
                name = peer_name(s, ports)
                no_answer_timeout = timed_out(s)
            if name is not None and name != s.service:
                blamed, client_only, caller = name, callee is None, s.service
        origin = Origin(blamed, client_only, caller, timeout=timeout,
                        no_answer_timeout=client_only and no_answer_timeout)
        cur = s
        for _ in range(len(by_id)):  # bounded walk up the failed ancestors
            pid = parent_of.get(cur.span_id)
            if pid is None:
                break
            parent = by_id[pid]
            if not parent.error:
                origin.absorbed_by = parent.service
                break
            if parent.kind in CALLEE_KINDS and parent.service != blamed \
                    and parent.service not in origin.victims:
                origin.victims.append(parent.service)
            cur = parent
        origins.append(origin)
    return TraceFacts(trace_id, visits, origins, skewed)


# A CLIENT span that failed after this long without an answer waited for one: a refused
# connection fails in milliseconds, even on a busy host.
NO_ANSWER_TIMEOUT_MS = 250.0
_TIMEOUT_WORDS = ("timeout", "timed out", "timedout", "deadline")
_REFUSED_WORDS = ("refused", "connect", "unavailable")


def timed_out(s: SpanRecord) -> bool:
    """Whether a failed call with no answer timed out (the callee is hung, starved or slow)
    rather than being refused (nothing listens): ``error.type`` or the status message says
    so (``timeout``, ``ReadTimeout``, ``DEADLINE_EXCEEDED``...), or, when neither names a
    refusal, the call waited ``NO_ANSWER_TIMEOUT_MS`` or longer."""
    text = _failure_text(s)
    if any(w in text for w in _TIMEOUT_WORDS):
        return True
    if any(w in text for w in _REFUSED_WORDS):
        return False
    return s.duration_ns >= NO_ANSWER_TIMEOUT_MS * 1e6


def refused(s: SpanRecord) -> bool:
    """A failed call that says it reached nothing (a refused or failed connection: its
    ``error.type`` or status message says so, it timed out by neither, and it carries no
    response status). Nothing instrumented answers it, so its trace has nothing more to send:
    unlike a timeout, after which the slow callee's own span still comes."""
    if not s.error or any(k in s.attributes for k in RESPONSE_STATUS_ATTRIBUTES):
        return False
    text = _failure_text(s)
    return (any(w in text for w in _REFUSED_WORDS)
            and not any(w in text for w in _TIMEOUT_WORDS))


def _failure_text(s: SpanRecord) -> str:
    """A failed span's ``error.type`` and status message, lower-cased, for the words above."""
    what = s.attributes.get("error.type")
    return f"{what if isinstance(what, str) else ''} {s.status_message}".lower()


def _slowest(span: SpanRecord, children: dict[bytes, list[SpanRecord]]) -> SpanRecord:
    """Down the critical path: the span whose own time, not a child's, made this one long."""
    cur = span
    for _ in range(len(children) + 1):  # bounded descent
        kids = children.get(cur.span_id)
        if not kids:
            return cur
        longest = max(kids, key=lambda c: c.duration_ns)
        covered = _union_ns([(c.start_ns, c.end_ns) for c in kids], cur.start_ns, cur.end_ns)
        if cur.duration_ns - covered >= longest.duration_ns:
            return cur
        cur = longest
    return cur


def _caller_visit(s: SpanRecord, parent: SpanRecord | None, visit_of: dict[bytes, int],
                  visits: list[Visit]) -> int:
    if parent is not None:
        idx = visit_of.get(parent.span_id)
        if idx is not None and visits[idx].service == s.service:
            return idx
    visits.append(Visit(s.service, s.error and s.kind not in CALLER_KINDS, 0, s.duration_ns,
                        False, parent.service if parent else None,
                        visit_of.get(parent.span_id, -1) if parent is not None else -1))
    return len(visits) - 1


def _parents(
    by_id: dict[bytes, SpanRecord],
) -> tuple[dict[bytes, bytes], dict[bytes, list[SpanRecord]]]:
    """(span id -> parent span id, span id -> child spans). A span whose parent was lost (an
    exporter dropped it) is adopted by the shortest span that encloses it in time, outside its
    own subtree: the caller's time is then not mistaken for its own, and errors still reach
    their victims."""
    parent_of: dict[bytes, bytes] = {}
    children: dict[bytes, list[SpanRecord]] = {}
    orphans: list[SpanRecord] = []
    for sid, s in by_id.items():
        pid = s.parent_span_id
        if pid and pid != sid:
            if pid in by_id:
                parent_of[sid] = pid
                kids = children.get(pid)
                if kids is None:
                    children[pid] = [s]
                else:
                    kids.append(s)
            else:
                orphans.append(s)
    if not orphans:
        return parent_of, children
    kids_of: dict[bytes, list[bytes]] = {}
    for sid, pid in parent_of.items():
        kids_of.setdefault(pid, []).append(sid)
    for o in orphans:
        below = {o.span_id}
        stack = [o.span_id]
        while stack:  # o's own subtree may not adopt it (that would make a cycle)
            for k in kids_of.get(stack.pop(), ()):
                if k not in below:
                    below.add(k)
                    stack.append(k)
        best: SpanRecord | None = None
        for c in by_id.values():
            if c.span_id in below or c.start_ns > o.start_ns or c.end_ns < o.end_ns:
                continue
            if best is None or c.duration_ns < best.duration_ns:
                best = c
        if best is not None:
            parent_of[o.span_id] = best.span_id
            kids_of.setdefault(best.span_id, []).append(o.span_id)
    # Adopted spans join their new parent's children after its own (same order as parent_of).
    children = {}
    for sid, pid in parent_of.items():
        children.setdefault(pid, []).append(by_id[sid])
    return parent_of, children


def _start_ns(s: SpanRecord) -> int:
    return s.start_ns


# A server span sticking out of its client span by less than this is timer noise, not a clock
# that is off (it is still moved inside, but not counted as skewed).
CLOCK_SKEW_MIN_NS = 1_000_000


def _clock_shifts(order: list[SpanRecord], by_id: dict[bytes, SpanRecord],
                  parent_of: dict[bytes, bytes]) -> tuple[dict[bytes, int], int]:
    """How far (ns) to move each span whose process' clock disagrees with its caller's, and
    how many calls showed it, as Jaeger's clock-skew adjuster does: where a span of another
    service lies outside its parent (the caller's client span, in the caller's time), it is
    centred in it (the network time split evenly both ways; a longer child starts with its
    parent), and its same-service descendants move with it. Spans already inside move not."""
    for sid, up in parent_of.items():  # the common case: every span inside its parent
        child, caller = by_id[sid], by_id[up]
        if (child.start_ns < caller.start_ns or child.end_ns > caller.end_ns) \
                and child.service != caller.service:
            break
    else:
        return {}, 0
    shift: dict[bytes, int] = {}
    skewed = 0
    for s in order:
        pid = parent_of.get(s.span_id)
        if pid is None:
            continue
        parent = by_id[pid]
        base = shift.get(pid, 0)
        if parent.service == s.service:  # one process, one clock
            if base:
                shift[s.span_id] = base
            continue
        p_start, p_end = parent.start_ns + base, parent.end_ns + base
        if p_start <= s.start_ns and s.end_ns <= p_end:
            continue
        slack = (p_end - p_start) - (s.end_ns - s.start_ns)
        target = p_start + slack // 2 if slack > 0 else p_start
        shift[s.span_id] = target - s.start_ns
        if max(p_start - s.start_ns, s.end_ns - p_end) > CLOCK_SKEW_MIN_NS:
            skewed += 1
    return shift, skewed


def _topological(by_id: dict[bytes, SpanRecord], children: dict[bytes, list[SpanRecord]],
                 parent_of: dict[bytes, bytes]) -> list[SpanRecord]:
    """Parents before children (siblings by start time); spans with no (adopted) parent act
    as roots."""
    roots = [s for s in by_id.values() if s.span_id not in parent_of]
    out: list[SpanRecord] = []
    # Every span has at most one parent, so the walk from the roots reaches each span once.
    stack = sorted(roots, key=_start_ns)[::-1] if len(roots) > 1 else roots
    while stack:
        s = stack.pop()
        out.append(s)
        kids = children.get(s.span_id)
        if kids:
            if len(kids) == 1:
                stack.append(kids[0])
            else:
                stack.extend(sorted(kids, key=_start_ns)[::-1])
    if len(out) != len(by_id):
        # Cycles (malformed parent links) leave spans unreached: analyse them as roots.
        seen = {s.span_id for s in out}
        out.extend(s for s in by_id.values() if s.span_id not in seen)
    return out
