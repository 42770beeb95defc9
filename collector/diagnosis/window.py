"""Per-service trace facts in fixed time buckets (a ring), so memory does not grow with traffic.

Each bucket (``BUCKET_S`` seconds of collector time) holds, per service: requests (visits),
failed visits, error origins blamed on the service (and how many were seen only from a
caller's CLIENT span), errors it absorbed, who it was a victim of, self-time and inclusive-time
histograms with fixed log-spaced bins, and a few sample trace ids. Buckets older than
``retention_s`` are dropped; the last ``FINE_RETENTION_S`` seconds are also kept in quarter-second
buckets (``recent``). ``mark`` flags a service's buckets as anomalous so a baseline
("the last healthy period") can skip them.

A trace kept by head sampling (see ``consumer``) is recorded with an integer ``weight`` (about
``1/p``): every count it adds, histogram bins included, is multiplied by it, so counts and
ratios stay unbiased estimates of the whole traffic. ``Hist.samples`` counts the visits
actually seen, unweighted, and ``Cell.weight`` is the mean weight: significance tests judge
the evidence actually seen, not the scaled-up estimate (see ``compare``).

The cells of both rings together are capped by the memory budget's share
(``ServiceWindows.max_cells``, from `collector.limits.MemoryLimits`): when full, the oldest
history goes first and every cut is counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from collector.diagnosis.traces import TraceFacts, Visit
from collector.limits import DEFAULT_MEMORY

BUCKET_S = 5.0
RETENTION_S = 900.0
# A second, short ring of quarter-second buckets for the last ``FINE_RETENTION_S`` seconds only:
# the root cause's recent windows (a fault seconds old) would be diluted by a 5 s bucket's older
# part. With 1 s buckets a "last second" held anything from half a second of traces to one and
# a half as the clock moved through a bucket (a 23 requests/s service's window held 1 visit on
# one tick and 7 on the one before); a quarter of a second keeps it within an eighth.
FINE_BUCKET_S = 0.25
FINE_RETENTION_S = 10.0
MAX_SERVICES = 2_000
# Kept whatever the memory budget (see ``ServiceWindows.max_cells``): the last minute of main
# buckets, for a baseline, and the last 7 s of fine ones: the root cause's longest recent look
# (6 s) ends the settling lag (`traces.TraceAssembler.recent_lag_s`, 0.5 s) before now.
MIN_HISTORY_S = 60.0
MIN_FINE_S = 7.0
MAX_SAMPLES = 5
MAX_BLAST_SAMPLES = 3  # example trace ids per (service, root cause) for the blast radius
# Histogram bins: 2**(1/4) apart from 10 us, so a quantile is within ~19% of the truth.
HIST_MIN_MS = 0.01
HIST_STEP = 2 ** 0.25
HIST_BINS = 100


# math.log(x, base) is log(x) / log(base): the divisor computed once gives the same bins.
_LOG_STEP = math.log(HIST_STEP)
_log = math.log


def _bin(ms: float) -> int:
    if ms <= HIST_MIN_MS:
        return 0
    return min(HIST_BINS - 1, int(_log(ms / HIST_MIN_MS) / _LOG_STEP) + 1)


def _bin_upper_ms(i: int) -> float:
    return HIST_MIN_MS * HIST_STEP ** i


@dataclass(slots=True)
class Hist:
    """A sparse fixed-bin latency histogram (ms). ``count`` is the weighted number of values
    (each bin's too); ``samples`` the values actually added, unweighted."""

    bins: dict[int, int] = field(default_factory=dict)
    count: int = 0
    samples: int = 0

    def add(self, ms: float, weight: int = 1) -> None:
        b = _bin(ms)
        self.bins[b] = self.bins.get(b, 0) + weight
        self.count += weight
        self.samples += 1

    def merge(self, other: Hist) -> None:
        for b, n in other.bins.items():
            self.bins[b] = self.bins.get(b, 0) + n
        self.count += other.count
        self.samples += other.samples

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for b in sorted(self.bins):
            seen += self.bins[b]
            if seen >= rank:
                # Geometric middle of the bin: unbiased for log-spread values.
                return _bin_upper_ms(b) / math.sqrt(HIST_STEP) if b else HIST_MIN_MS
        return _bin_upper_ms(max(self.bins))

    def excess_ms(self, ref_ms: float) -> float:
        """Weighted sum of how far the values lie above ``ref_ms`` (each bin at its geometric
        middle, as ``quantile``): the time a slowdown added over a typical value."""
        total = 0.0
        for b, n in self.bins.items():
            mid = _bin_upper_ms(b) / math.sqrt(HIST_STEP) if b else HIST_MIN_MS
            if mid > ref_ms:
                total += (mid - ref_ms) * n
        return total

    def count_above(self, ms: float) -> int:
        """Weighted count of values in bins entirely above ``ms`` (a lower bound)."""
        return sum(n for b, n in self.bins.items() if b and _bin_upper_ms(b - 1) >= ms)


@dataclass(slots=True)
class Cell:
    """One service in one bucket."""

    requests: int = 0
    errors: int = 0
    origins: int = 0  # not counting timeouts
    timeouts: int = 0  # callers timed out waiting for it
    client_only: int = 0
    client_only_errors: int = 0
    no_answer_timeouts: int = 0  # of ``client_only_errors``: calls that timed out, not refused
    absorbed: int = 0  # errors of its dependencies it absorbed (fallback, retry)
    origins_absorbed: int = 0  # of its own origins, how many a caller absorbed
    self_hist: Hist = field(default_factory=Hist)
    # Self time without the callers' CLIENT-side part (``Visit.net_ns``): the time spent
    # inside the service's own spans. A starved caller lifts every callee's self time, not
    # this; the common-cause step compares neighbours on it.
    own_hist: Hist = field(default_factory=Hist)
    incl_hist: Hist = field(default_factory=Hist)
    victim_of: dict[str, int] = field(default_factory=dict)
    # Requests of this service that had a slow visit of another service below them (slower
    # than ``ServiceWindows.slow_ms`` of that service), by that service.
    slowed_by: dict[str, int] = field(default_factory=dict)
    # Example traces for ``victim_of`` and ``slowed_by``, by root service.
    blast_traces: dict[str, list[bytes]] = field(default_factory=dict)
    absorbed_from: dict[str, int] = field(default_factory=dict)
    callers: dict[str, int] = field(default_factory=dict)
    origin_traces: list[bytes] = field(default_factory=list)
    slow_traces: list[tuple[float, bytes]] = field(default_factory=list)
    anomalous: bool = False
    # In a baseline (``ServiceWindows.baseline``): how many buckets saw the service.
    buckets: int = 0

    def merge(self, o: Cell) -> None:
        self.requests += o.requests
        self.errors += o.errors
        self.origins += o.origins
        self.timeouts += o.timeouts
        self.client_only += o.client_only
        self.client_only_errors += o.client_only_errors
        self.no_answer_timeouts += o.no_answer_timeouts
        self.absorbed += o.absorbed
        self.origins_absorbed += o.origins_absorbed
        self.self_hist.merge(o.self_hist)
        self.own_hist.merge(o.own_hist)
        self.incl_hist.merge(o.incl_hist)
        for k, n in o.victim_of.items():
            self.victim_of[k] = self.victim_of.get(k, 0) + n
        for k, n in o.slowed_by.items():
            self.slowed_by[k] = self.slowed_by.get(k, 0) + n
        for k, ts in o.blast_traces.items():
            _sample(self.blast_traces.setdefault(k, []), ts)
        for k, n in o.absorbed_from.items():
            self.absorbed_from[k] = self.absorbed_from.get(k, 0) + n
        for k, n in o.callers.items():
            self.callers[k] = self.callers.get(k, 0) + n
        for t in o.origin_traces:
            if len(self.origin_traces) < MAX_SAMPLES and t not in self.origin_traces:
                self.origin_traces.append(t)
        self.slow_traces = sorted(self.slow_traces + o.slow_traces, reverse=True)[:MAX_SAMPLES]

    @property
    def origin_ratio(self) -> float:
        return self.origins / self.requests if self.requests else 0.0

    @property
    def weight(self) -> float:
        """Mean sampling weight of the visits counted here: 1.0 unless head sampling ran.
        A count divided by it is the evidence actually seen."""
        seen = self.self_hist.samples
        return self.requests / seen if seen and self.requests > seen else 1.0


def _sample(into: list[bytes], traces: Iterable[bytes]) -> None:
    for t in traces:
        if len(into) >= MAX_BLAST_SAMPLES:
            return
        if t not in into:
            into.append(t)


class ServiceWindows:
    """The ring of buckets: ``record`` trace facts, ``aggregate`` a service over a time range."""

    def __init__(self, bucket_s: float = BUCKET_S, retention_s: float = RETENTION_S,
                 max_services: int = MAX_SERVICES,
                 max_cells: int = DEFAULT_MEMORY.window_cells) -> None:
        if bucket_s <= 0 or retention_s < bucket_s:
            raise ValueError("service windows: need bucket_s > 0 and retention_s >= bucket_s")
        if max_cells < 1:
            raise ValueError(f"service windows: need max_cells >= 1, got {max_cells}")
        self.bucket_s = bucket_s
        self.max_buckets = int(retention_s // bucket_s) + 1
        self.max_services = max_services
        self._buckets: dict[int, dict[str, Cell]] = {}
        self._fine: dict[int, dict[str, Cell]] = {}
        self._max_fine = int(FINE_RETENTION_S // FINE_BUCKET_S) + 1
        self._services: set[str] = set()
        self.dropped_services = 0
        # The memory budget's share (`MemoryLimits.window_cells`): cells held in both rings.
        # When full, the oldest history goes first: main buckets beyond the last
        # ``MIN_HISTORY_S`` (the baseline reaches less far back), then fine buckets beyond
        # the last ``MIN_FINE_S`` (the root cause's longest recent look); only then is a
        # visit not recorded. Each is counted.
        self.max_cells = max_cells
        self.cells = 0
        self.buckets_cut = 0  # main buckets dropped before the retention, to stay in budget
        self.fine_buckets_cut = 0
        self.cells_refused = 0  # visits not recorded: every bucket left is needed
        self._min_buckets = min(self.max_buckets, int(MIN_HISTORY_S // bucket_s) + 2)
        self._min_fine = int(MIN_FINE_S // FINE_BUCKET_S) + 2
        # Own time (ms) above which a visit of a service counts as slow for the requests
        # above it (``Cell.slowed_by``); set by each evaluation from the service's baseline.
        self.slow_ms: dict[str, float] = {}

    def _cell(self, bucket: dict[str, Cell], service: str, count: bool = True) -> Cell | None:
        """``service``'s cell in ``bucket``, None past ``max_services`` (counted when
        ``count``: once per visit, in the main ring only)."""
        cell = bucket.get(service)
        if cell is None:
            if service not in self._services:
                if len(self._services) >= self.max_services:
                    if count:
                        self.dropped_services += 1
                    return None
                self._services.add(service)
            if self.cells >= self.max_cells and not self._make_room(bucket):
                self.cells_refused += 1
                return None
            cell = bucket[service] = Cell()
            self.cells += 1
        return cell

    def _make_room(self, keep: dict[str, Cell]) -> bool:
        """Drop the oldest bucket that may go (not ``keep``, the one being written): main
        history past the last ``MIN_HISTORY_S`` first, then fine past ``MIN_FINE_S``."""
        for ring, least in ((self._buckets, self._min_buckets), (self._fine, self._min_fine)):
            while len(ring) > least:
                oldest = min(ring)
                if ring[oldest] is keep:
                    break
                self.cells -= len(ring.pop(oldest))
                if ring is self._buckets:
                    self.buckets_cut += 1
                else:
                    self.fine_buckets_cut += 1
                if self.cells < self.max_cells:
                    return True
        return False

    def record(self, facts: TraceFacts, t: float, w: int = 1) -> None:
        """Add one finished trace's facts, every count multiplied by the weight ``w``, to its
        bucket and to its fine (quarter-second) bucket."""
        idx = int(t // self.bucket_s)
        bucket = self._buckets.get(idx)
        if bucket is None:
            bucket = self._buckets[idx] = {}
            self._expire(idx)
        self._record(bucket, facts, w, True)
        idx = int(t // FINE_BUCKET_S)
        fine = self._fine.get(idx)
        if fine is None:
            fine = self._fine[idx] = {}
            for old in [i for i in self._fine if i <= idx - self._max_fine]:
                self.cells -= len(self._fine.pop(old))
        self._record(fine, facts, w, False)

    def _record(self, bucket: dict[str, Cell], facts: TraceFacts, w: int, main: bool) -> None:
        # Runs for every visit of every finished trace: `Hist.add` and `_bin` written out.
        top = HIST_BINS - 1
        slow_ms = self.slow_ms
        visits = facts.visits
        for v in visits:
            cell = bucket.get(v.service)
            if cell is None:
                cell = self._cell(bucket, v.service, main)
                if cell is None:
                    continue
            cell.requests += w
            if v.error:
                cell.errors += w
            if v.client_only:
                cell.client_only += w
                cell.client_only_errors += w if v.error else 0
            caller = v.caller
            if caller is not None:
                callers = cell.callers
                callers[caller] = callers.get(caller, 0) + w
            self_ms = v.self_ns / 1e6
            b = 0 if self_ms <= HIST_MIN_MS else min(top, int(_log(self_ms / HIST_MIN_MS)
                                                              / _LOG_STEP) + 1)
            hist = cell.self_hist
            hist.bins[b] = hist.bins.get(b, 0) + w
            hist.count += w
            hist.samples += 1
            if v.net_ns:
                ms = (v.self_ns - v.net_ns) / 1e6
                b = 0 if ms <= HIST_MIN_MS else min(top, int(_log(ms / HIST_MIN_MS)
                                                             / _LOG_STEP) + 1)
            hist = cell.own_hist
            hist.bins[b] = hist.bins.get(b, 0) + w
            hist.count += w
            hist.samples += 1
            own_ms = (v.self_ns - v.net_ns) / 1e6
            ms = v.incl_ns / 1e6
            b = 0 if ms <= HIST_MIN_MS else min(top, int(_log(ms / HIST_MIN_MS) / _LOG_STEP) + 1)
            hist = cell.incl_hist
            hist.bins[b] = hist.bins.get(b, 0) + w
            hist.count += w
            hist.samples += 1
            if len(cell.slow_traces) < MAX_SAMPLES or self_ms > cell.slow_traces[-1][0]:
                if all(tid != facts.trace_id for _, tid in cell.slow_traces):
                    cell.slow_traces.append((self_ms, facts.trace_id))
                    cell.slow_traces.sort(reverse=True)
                    del cell.slow_traces[MAX_SAMPLES:]
            slow = slow_ms.get(v.service)
            if slow is not None and own_ms > slow and v.parent >= 0:
                self._slowed(bucket, visits, v, facts.trace_id, w, main)
        for o in facts.origins:
            cell = self._cell(bucket, o.service, main)
            if cell is not None and o.timeout:
                cell.timeouts += w
            elif cell is not None:
                cell.origins += w
                if o.no_answer_timeout:
                    cell.no_answer_timeouts += w
                cell.origins_absorbed += w if o.absorbed_by is not None else 0
                if len(cell.origin_traces) < MAX_SAMPLES \
                        and facts.trace_id not in cell.origin_traces:
                    cell.origin_traces.append(facts.trace_id)
            for victim in o.victims:
                vc = self._cell(bucket, victim, main)
                if vc is not None:
                    vc.victim_of[o.service] = vc.victim_of.get(o.service, 0) + w
                    _sample(vc.blast_traces.setdefault(o.service, []), (facts.trace_id,))
            if o.absorbed_by is not None:
                ac = self._cell(bucket, o.absorbed_by, main)
                if ac is not None:
                    ac.absorbed += w
                    ac.absorbed_from[o.service] = ac.absorbed_from.get(o.service, 0) + w

    def _slowed(self, bucket: dict[str, Cell], visits: list[Visit], slow: Visit,
                trace_id: bytes, w: int, main: bool) -> None:
        """Count a slow visit against every service above it in the trace, once each."""
        seen = {slow.service}
        j = slow.parent
        for _ in range(len(visits)):  # bounded walk up the callers
            if j < 0:
                break
            above = visits[j]
            if above.service not in seen:
                seen.add(above.service)
                cell = self._cell(bucket, above.service, main)
                if cell is not None:
                    cell.slowed_by[slow.service] = cell.slowed_by.get(slow.service, 0) + w
                    _sample(cell.blast_traces.setdefault(slow.service, []), (trace_id,))
            j = above.parent

    def _expire(self, newest: int) -> None:
        oldest = newest - self.max_buckets
        for idx in [i for i in self._buckets if i <= oldest]:
            self.cells -= len(self._buckets.pop(idx))

    def _range(self, t0: float, t1: float) -> range:
        """Buckets that end after ``t0`` and start at or before ``t1``."""
        return range(int(t0 // self.bucket_s), int(t1 // self.bucket_s) + 1)

    def aggregate(self, service: str, t0: float, t1: float,
                  skip_anomalous: bool = False) -> Cell:
        out = Cell()
        for idx in self._range(t0, t1):
            bucket = self._buckets.get(idx)
            cell = bucket.get(service) if bucket else None
            if cell is not None and not (skip_anomalous and cell.anomalous):
                out.merge(cell)
        return out

    def recent(self, service: str, t0: float, t1: float) -> Cell:
        """The service over about ``[t0, t1]`` in fine (``FINE_BUCKET_S``) buckets, within the
        last ``FINE_RETENTION_S`` seconds: for windows of a few seconds. A bucket counts when
        most of it lies after ``t0``, so the window is not diluted by older data."""
        return next(self.recent_since(service, (t0,), t1))

    def recent_since(self, service: str, starts: Iterable[float], t1: float) -> Iterator[Cell]:
        """``recent(service, t0, t1)`` for each ``t0`` of ``starts``, latest first, as one cell
        that grows: each bucket is merged once, not once per window (the root cause's looks
        at the last 1, 3 and 6 s; in quarter-second buckets, 24 merges a service and tick
        instead of 40). The cell yielded goes on growing: read it before the next."""
        out = Cell()
        end = int(t1 // FINE_BUCKET_S) + 1
        for t0 in starts:
            lo = round(t0 / FINE_BUCKET_S)
            for idx in range(lo, end):
                bucket = self._fine.get(idx)
                cell = bucket.get(service) if bucket else None
                if cell is not None:
                    out.merge(cell)
            end = min(end, lo)
            yield out

    def baseline(self, service: str, before: float, span_s: float) -> Cell:
        """The service over the last ``span_s`` seconds of buckets ending before ``before``
        that were not marked anomalous for it: "the last healthy period", reaching further
        back (within the retention) past the buckets of an ongoing fault."""
        out = Cell()
        want = max(1, int(round(span_s / self.bucket_s)))
        idx = int(before // self.bucket_s)
        oldest = min(self._buckets, default=idx)
        while want > 0 and idx >= oldest:
            bucket = self._buckets.get(idx)
            cell = bucket.get(service) if bucket else None
            if cell is None or not cell.anomalous:
                want -= 1
                if cell is not None:
                    out.merge(cell)
                    out.buckets += 1
            idx -= 1
        return out

    def services(self, t0: float, t1: float) -> list[str]:
        names: set[str] = set()
        for idx in self._range(t0, t1):
            names.update(self._buckets.get(idx, {}))
        return sorted(names)

    def mark(self, services: Iterable[str], t0: float, t1: float) -> None:
        """Flag these services' buckets in ``[t0, t1]`` as anomalous (kept out of baselines)."""
        names = set(services)
        for idx in self._range(t0, t1):
            for name, cell in self._buckets.get(idx, {}).items():
                if name in names:
                    cell.anomalous = True
