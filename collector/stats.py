"""Rolling-window statistics per key (a node or an edge), in fixed time buckets.

Each key keeps a ring of buckets: the newest ``FINE_BUCKETS`` at ``bucket_s`` resolution, older
ones (up to ``retention_s``) merged ``COARSE_FACTOR`` at a time, so memory per key is bounded by
the retention and never by the traffic. A bucket holds call and error counts and a log-bucket
latency sketch (``collector.sketch``), so any window from one bucket to the retention can be
summed and its quantiles read. Time is always passed in (epoch seconds).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector import sketch

FINE_BUCKETS = 120
COARSE_FACTOR = 10
MAX_SERIES_POINTS = 120
MAX_VERSIONS_PER_SERVICE = 32
# A version change this close to an incident is reported with it (a deploy, then a fault).
VERSION_CHANGE_HORIZON_S = 3_600.0

_INV_LOG_GAMMA = 1.0 / math.log(sketch.GAMMA)
_ZERO = sketch.ZERO_KEY
_MIN = sketch.MIN_VALUE
_log = math.log
_ceil = math.ceil


class Slot:
    """One bucket of one key: calls, errors and latency bins (milliseconds).

    For edges, ``server_errors`` counts calls whose server half was ERROR; the other errors
    are the client's alone (timeouts, refused connections, uninstrumented failures).
    """

    __slots__ = ("calls", "errors", "server_errors", "client_errors", "bins")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.server_errors = 0
        self.client_errors = 0
        self.bins: sketch.Bins = {}

    def merge(self, other: Slot) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.server_errors += other.server_errors
        self.client_errors += other.client_errors
        sketch.merge_into(self.bins, other.bins)


class Series:
    """The ring of one key. ``cur`` is the newest slot, kept at hand for the hot path.

    ``_dirty``: the newest slot changed since the last `RollingStats.export_changes`.
    """

    __slots__ = ("fine", "coarse", "last_idx", "cur", "_dirty")

    def __init__(self) -> None:
        self.fine: dict[int, Slot] = {}
        self.coarse: dict[int, Slot] = {}
        self.last_idx = -1
        self.cur = Slot()
        self._dirty = False


# A bucket as `RollingStats.export_changes` / `export_all` report it and `restore` takes it:
# (key, coarse?, index, state), state None when the bucket is gone. Coarse indexes count
# COARSE_FACTOR buckets each.
SlotState = tuple[int, int, int, int, dict[int, int]]
Change = tuple[Hashable, bool, int, SlotState | None]


def _state(slot: Slot) -> SlotState:
    return (slot.calls, slot.errors, slot.server_errors, slot.client_errors, dict(slot.bins))


@dataclass(slots=True, frozen=True)
class Summary:
    calls: int
    errors: int
    rate_rps: float
    error_ratio: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    server_errors: int = 0
    client_errors: int = 0

    @property
    def client_only_errors(self) -> int:
        return self.errors - self.server_errors


EMPTY = Summary(0, 0, 0.0, 0.0, None, None, None)


@dataclass(slots=True, frozen=True)
class Point:
    t: float
    rate_rps: float
    error_ratio: float
    p95_ms: float | None


class RollingStats:
    """Rolling statistics for many keys. ``record`` is the hot path; queries merge buckets.

    ``started_at`` is when observation began: rates over a window longer than the time observed
    so far divide by the time observed, so a fresh collector does not under-report.
    """

    def __init__(
        self, bucket_s: float = 1.0, retention_s: float = 900.0, started_at: float = 0.0
    ) -> None:
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
        if retention_s < bucket_s:
            raise ValueError(f"retention_s ({retention_s}) must be >= bucket_s ({bucket_s})")
        self.bucket_s = float(bucket_s)
        self.retention_s = float(retention_s)
        self.started_at = started_at
        self._inv_bucket = 1.0 / self.bucket_s
        self._retention_n = max(1, int(round(retention_s / bucket_s)))
        self._series: dict[Hashable, Series] = {}
        self.late_dropped = 0  # records older than the retention when they arrived
        # Change tracking for `export_changes`. The hot path only flags a key's newest slot
        # (`_dirty_keys`, at most one entry per key); the rarer changes (an older slot written,
        # a fine slot merged into a coarse one) are kept only while tracking, so nothing
        # accumulates when no one exports them.
        self._tracking = False
        self._dirty_keys: list[Hashable] = []
        self._touched: set[tuple[Hashable, bool, int]] = set()
        self._gone: set[tuple[Hashable, int]] = set()

    # -- writing ---------------------------------------------------------------------------

    def record(
        self,
        key: Hashable,
        t: float,
        duration_ms: float,
        error: bool,
        server_error: bool = False,
        client_error: bool = False,
        weight: int = 1,
    ) -> None:
        """Count one call at time ``t``; ``duration_ms < 0`` means the latency is unknown.

        ``error`` is whether the call failed; ``server_error`` / ``client_error`` whether its
        server / client half did (edges only). ``weight``: the calls it stands for (a
        head-sampled trace's, `collector.sampling`).
        """
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = Series()
        idx = int(t * self._inv_bucket)
        slot = s.cur if idx == s.last_idx else self._slot(key, s, idx)
        if slot is None:
            self.late_dropped += 1
            return
        if not s._dirty:
            s._dirty = True
            self._dirty_keys.append(key)
        slot.calls += weight
        if error:
            slot.errors += weight
            if server_error:
                slot.server_errors += weight
            if client_error:
                slot.client_errors += weight
        if duration_ms >= 0:
            bins = slot.bins
            if duration_ms > _MIN:
                i = _ceil(_log(duration_ms) * _INV_LOG_GAMMA)
                bins[i] = bins.get(i, 0) + weight
            else:
                bins[_ZERO] = bins.get(_ZERO, 0) + weight

    def _slot(self, key: Hashable, s: Series, idx: int) -> Slot | None:
        if idx > s.last_idx:
            if self._tracking and s._dirty:
                self._touched.add((key, False, s.last_idx))  # the previous newest changed too
            slot = s.cur = s.fine[idx] = Slot()
            s.last_idx = idx
            self._roll(key, s, idx)
            return slot
        if idx > s.last_idx - FINE_BUCKETS:
            if self._tracking:
                self._touched.add((key, False, idx))
            found = s.fine.get(idx)
            if found is None:
                found = s.fine[idx] = Slot()
            return found
        if idx <= s.last_idx - self._retention_n:
            return None
        cidx = idx // COARSE_FACTOR
        if self._tracking:
            self._touched.add((key, True, cidx))
        old = s.coarse.get(cidx)
        if old is None:
            old = s.coarse[cidx] = Slot()
        return old

    def _roll(self, key: Hashable, s: Series, newest: int) -> None:
        # Called once per new bucket per key: move aged fine buckets into coarse ones and drop
        # what fell out of the retention. Both dicts stay bounded by construction.
        oldest_fine = newest - FINE_BUCKETS
        aged = [i for i in s.fine if i <= oldest_fine]
        for i in aged:
            slot = s.fine.pop(i)
            cidx = i // COARSE_FACTOR
            if self._tracking:
                self._touched.discard((key, False, i))
                self._gone.add((key, i))
                self._touched.add((key, True, cidx))
            target = s.coarse.get(cidx)
            if target is None:
                s.coarse[cidx] = slot
            else:
                target.merge(slot)
        oldest_coarse = (newest - self._retention_n) // COARSE_FACTOR
        for c in [c for c in s.coarse if c < oldest_coarse]:
            del s.coarse[c]

    def prune(self, now: float) -> int:
        """Forget keys with nothing inside the retention; returns how many were forgotten."""
        horizon = int(now * self._inv_bucket) - self._retention_n
        idle = [k for k, s in self._series.items() if s.last_idx < horizon]
        for k in idle:
            del self._series[k]
        return len(idle)

    # -- export and restore ----------------------------------------------------------------

    def track_changes(self) -> None:
        """Start remembering changed buckets for `export_changes` (call before any record)."""
        self._tracking = True

    def export_changes(self) -> list[Change]:
        """Buckets changed since the last export, with their state now (a copy), then forget
        them. Gone buckets (merged into a coarse one) come with state None, before any others.
        Without `track_changes` only the newest bucket of each key written to is reported.
        """
        touched = self._touched
        for key in self._dirty_keys:
            s = self._series.get(key)
            if s is not None:
                s._dirty = False
                touched.add((key, False, s.last_idx))
        out: list[Change] = []
        for key, idx in self._gone:
            touched.discard((key, False, idx))
            out.append((key, False, idx, None))
        for key, coarse, idx in touched:
            s = self._series.get(key)
            if s is None:
                continue  # pruned: its buckets left the retention
            slot = (s.coarse if coarse else s.fine).get(idx)
            if slot is not None:
                out.append((key, coarse, idx, _state(slot)))
            elif coarse:
                out.append((key, True, idx, None))
        self._forget_changes()
        return out

    def export_all(self) -> list[Change]:
        """Every bucket with its state (a copy); changes are tracked from now on."""
        out: list[Change] = []
        for key, s in self._series.items():
            s._dirty = False
            out.extend((key, False, i, _state(slot)) for i, slot in s.fine.items())
            out.extend((key, True, c, _state(slot)) for c, slot in s.coarse.items())
        self._forget_changes()
        self._tracking = True
        return out

    def _forget_changes(self) -> None:
        self._dirty_keys = []
        self._touched = set()
        self._gone = set()

    def restore(self, buckets: Iterable[Change], now: float) -> int:
        """Put back buckets saved from an export, skipping those older than the retention at
        ``now`` (and gone ones); returns how many were put back. Not reported as changes."""
        horizon = int(now / self.bucket_s) - int(round(self.retention_s / self.bucket_s))
        n = 0
        for key, coarse, idx, state in buckets:
            if state is None:
                continue
            newest = idx * COARSE_FACTOR + COARSE_FACTOR - 1 if coarse else idx
            if newest < horizon:
                continue
            self._restore_slot(key, coarse, idx, state)
            n += 1
        self._settle_restored()
        return n

    def _restore_slot(self, key: Hashable, coarse: bool, idx: int, state: SlotState) -> None:
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = Series()
        slot = Slot()
        slot.calls, slot.errors, slot.server_errors, slot.client_errors, bins = state
        slot.bins = dict(bins)
        if coarse:
            s.coarse[idx] = slot
            newest = idx * COARSE_FACTOR + COARSE_FACTOR - 1
        else:
            s.fine[idx] = slot
            newest = idx
        if newest > s.last_idx:
            s.last_idx = newest

    def _settle_restored(self) -> None:
        """After restoring: point each key's newest slot at hand and age its buckets."""
        for key, s in self._series.items():
            cur = s.fine.get(s.last_idx)
            if cur is None:
                cur = s.fine[s.last_idx] = Slot()
            s.cur = cur
            self._roll(key, s, s.last_idx)

    def export_counters(self) -> dict[str, int]:
        return {"late_dropped": self.late_dropped}

    def restore_counters(self, counters: Mapping[str, int]) -> None:
        """Set the counters from `export_counters`' output (missing ones to 0)."""
        self.late_dropped = int(counters.get("late_dropped", 0))

    # -- reading ---------------------------------------------------------------------------

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._series))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._series

    def __len__(self) -> int:
        return len(self._series)

    def seen_by(self, key: Hashable, t: float) -> bool:
        """Whether ``key`` has a retained bucket at or before ``t`` (it was known then)."""
        s = self._series.get(key)
        if s is None:
            return False
        idx = int(t * self._inv_bucket)
        return any(i <= idx for i in s.fine) or any(
            c * COARSE_FACTOR <= idx for c in s.coarse)

    def _range(self, now: float, window_s: float) -> tuple[int, int]:
        n = max(1, int(round(window_s * self._inv_bucket)))
        now_idx = int(now * self._inv_bucket)
        return now_idx - n + 1, now_idx

    def _slots(self, s: Series, lo: int, hi: int) -> Iterator[tuple[int, Slot]]:
        """Slots in ``[lo, hi]`` as (bucket index, slot); a coarse slot counts at its middle."""
        for i, slot in s.fine.items():
            if lo <= i <= hi:
                yield i, slot
        half = COARSE_FACTOR // 2
        for c, slot in s.coarse.items():
            mid = c * COARSE_FACTOR + half
            if lo <= mid <= hi:
                yield mid, slot

    def _seconds(self, now: float, window_s: float) -> float:
        observed = now - self.started_at
        return max(self.bucket_s, min(window_s, observed))

    def summary(self, key: Hashable, now: float, window_s: float) -> Summary:
        s = self._series.get(key)
        if s is None:
            return EMPTY
        lo, hi = self._range(now, window_s)
        total = Slot()
        for _, slot in self._slots(s, lo, hi):
            total.merge(slot)
        if total.calls == 0:
            return EMPTY
        p50, p95, p99 = sketch.quantiles(total.bins, (0.5, 0.95, 0.99))
        return Summary(
            calls=total.calls,
            errors=total.errors,
            rate_rps=total.calls / self._seconds(now, window_s),
            error_ratio=total.errors / total.calls,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            server_errors=total.server_errors,
            client_errors=total.client_errors,
        )

    def series(
        self, key: Hashable, now: float, window_s: float, max_points: int = MAX_SERIES_POINTS
    ) -> list[Point]:
        """Per-interval points over the window, at most about ``max_points`` of them.

        Points are aligned to multiples of their width (so coarse buckets fall in one point);
        an interval with no calls has rate 0 and no p95.
        """
        lo, hi = self._range(now, window_s)
        n = hi - lo + 1
        width = max(1, _ceil(n / max_points))
        if n > FINE_BUCKETS:
            width = COARSE_FACTOR * max(1, _ceil(n / COARSE_FACTOR / max_points))
        first, last = lo // width, hi // width
        acc: dict[int, Slot] = {}
        s = self._series.get(key)
        if s is not None:
            for i, slot in self._slots(s, lo, hi):
                p = i // width
                target = acc.get(p)
                if target is None:
                    target = acc[p] = Slot()
                target.merge(slot)
        seconds = width * self.bucket_s
        points: list[Point] = []
        for p in range(first, last + 1):
            got = acc.get(p)
            t = p * seconds
            if got is None or got.calls == 0:
                points.append(Point(t, 0.0, 0.0, None))
                continue
            (p95,) = sketch.quantiles(got.bins, (0.95,))
            points.append(Point(t, got.calls / seconds, got.errors / got.calls, p95))
        return points


@dataclass(slots=True)
class VersionSeen:
    version: str
    first_seen: float
    last_seen: float


@dataclass
class VersionLog:
    """Versions seen per service (``service.version``), first and last seen, bounded per service.

    Past ``max_per_service`` versions the least recently seen is forgotten and counted.
    """

    max_per_service: int = MAX_VERSIONS_PER_SERVICE
    dropped: int = 0
    _seen: dict[str, dict[str, VersionSeen]] = field(default_factory=dict)

    def record(self, service: str, version: str, t: float) -> None:
        versions = self._seen.get(service)
        if versions is None:
            versions = self._seen[service] = {}
        v = versions.get(version)
        if v is not None:
            if t > v.last_seen:
                v.last_seen = t
            return
        if len(versions) >= self.max_per_service:
            oldest = min(versions.values(), key=lambda x: x.last_seen)
            del versions[oldest.version]
            self.dropped += 1
        versions[version] = VersionSeen(version, t, t)

    def restore(self, service: str, versions: list[VersionSeen]) -> None:
        """Put back the versions of one service saved from `versions`."""
        self._seen[service] = {v.version: v for v in versions[-self.max_per_service:]}

    def export_counters(self) -> dict[str, int]:
        return {"dropped": self.dropped}

    def restore_counters(self, counters: Mapping[str, int]) -> None:
        """Set the counters from `export_counters`' output (missing ones to 0)."""
        self.dropped = int(counters.get("dropped", 0))

    def versions(self, service: str) -> list[VersionSeen]:
        """Oldest first by first seen."""
        return sorted(self._seen.get(service, {}).values(), key=lambda v: v.first_seen)

    def forget(self, service: str) -> None:
        self._seen.pop(service, None)

    def change_near(self, service: str, t: float,
                    horizon_s: float = VERSION_CHANGE_HORIZON_S) -> dict[str, Any] | None:
        """The version change of ``service`` nearest ``t`` (within ``horizon_s``), or None:
        ``{"service", "from", "to", "at"}``. A change is a version first seen after another
        one was already known."""
        ordered = self.versions(service)
        best: dict[str, Any] | None = None
        for prev, cur in zip(ordered, ordered[1:], strict=False):
            at = cur.first_seen
            if abs(at - t) > horizon_s:
                continue
            if best is None or abs(at - t) < abs(best["at"] - t):
                best = {"service": service, "from": prev.version, "to": cur.version, "at": at}
        return best
