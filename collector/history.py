"""Time travel: the graph, its health and the open incidents at a past moment.

``GET /api/graph?at=T&window=S`` shows the graph over ``[T - S, T]``: rates, error ratios and
latency come from the retained statistics buckets (`collector.stats`: 1 s buckets for the last
``FINE_BUCKETS`` seconds, 10 s ones back to the retention), so nothing extra is kept for them.
What the evaluation concluded at T cannot be recomputed from buckets (hysteresis, baselines,
the incident lifecycle), so each evaluation tick writes its changes to a `HealthLog`:

- per node and per edge, the health *transitions* only (time and a one-byte state), so an
  element that stays healthy costs one entry however long it lives;
- the open incidents, compact (id, root cause service/team/kind/summary, impacted services,
  who to page), each time that set or one of those fields changes.

Both are bounded by the retention (older entries are dropped every ``PRUNE_EVERY_S``, keeping
the one in force at the horizon) and by ``MAX_CHANGES`` per element and
``MAX_INCIDENT_CHANGES``. Memory: about ``TRACK_BYTES`` (~300 B) per node or edge seen within
the retention plus ``CHANGE_BYTES`` (9 B) per transition; 15,000 elements with a few
transitions each take ~5 MB (measured: 4.1 MB with three each), the worst case (every element
flapping at every tick until its cap) ~15,000 x 256 x 9 B ~ 35 MB. Writing costs a tick about
1.6 us per element (24 ms at 15,000). ``stats()`` says what it holds now (``GET /api/history``).

The log lives in memory: after a restart (``--data-dir`` restores the buckets and the
incidents, not the log) health before the restart is judged statelessly from the window's
numbers (``health_source: "judged"``), and incidents open then come from the incident store
with their latest root cause (``as_of: "latest"``).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collector.stats import COARSE_FACTOR, FINE_BUCKETS
from collector.vocabulary import HEALTH_STATES

MAX_CHANGES = 256  # transitions kept per element (the oldest go first)
MAX_INCIDENT_CHANGES = 2_000  # changes of the open-incident set kept
TRACK_BYTES = 300
PRUNE_EVERY_S = 10.0  # the retention is enforced this often (a pass over every element)
CHANGE_BYTES = 9
ABSENT = 255  # the element was not in that tick's graph
_CODE = {state: i for i, state in enumerate(HEALTH_STATES)}


class _Track:
    """One element's transitions: times (epoch s) and state codes, oldest first. Before
    ``times[0]`` the state is unknown (the cap dropped older transitions, or it was new)."""

    __slots__ = ("times", "codes")

    def __init__(self) -> None:
        self.times = array("d")
        self.codes = bytearray()

    def add(self, at: float, code: int) -> None:
        if self.codes and self.codes[-1] == code:
            return
        self.times.append(at)
        self.codes.append(code)
        if len(self.codes) > MAX_CHANGES:
            drop = len(self.codes) - MAX_CHANGES
            del self.times[:drop]
            del self.codes[:drop]

    def at(self, t: float) -> int | None:
        """The state code in force at ``t``; None when unknown (before the first entry)."""
        times = self.times
        lo, hi = 0, len(times)
        while lo < hi:  # the last entry at or before t
            mid = (lo + hi) // 2
            if times[mid] <= t:
                lo = mid + 1
            else:
                hi = mid
        return self.codes[lo - 1] if lo else None

    def prune(self, horizon: float) -> bool:
        """Drop entries older than ``horizon`` except the one in force there; True when
        nothing worth keeping is left (absent since before the horizon)."""
        times = self.times
        n = 0
        while n + 1 < len(times) and times[n + 1] <= horizon:
            n += 1
        if n:
            del times[:n]
            del self.codes[:n]
        return len(times) == 1 and times[0] <= horizon and self.codes[0] == ABSENT


@dataclass(frozen=True, slots=True)
class PastHealth:
    """Health at one moment from the log: by node and by edge (what the log does not know
    is left out: the reader judges it from the window's numbers)."""

    nodes: dict[str, str]
    edges: dict[tuple[str, str], str]


class HealthLog:
    """What each evaluation tick concluded, as changes only (see the module doc). Not
    thread-safe: the tick writes and readers read under the service lock."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self.covered_from: float | None = None  # the first tick logged
        self.last_at: float | None = None
        self._nodes: dict[str, _Track] = {}
        self._edges: dict[tuple[str, str], _Track] = {}
        self._incidents: list[tuple[float, tuple[dict[str, Any], ...]]] = []
        self._incident_key: tuple[Any, ...] | None = None
        self._changes = 0  # transitions held (for `stats`)
        self._pruned_at = -math.inf

    def record(self, at: float, nodes: Mapping[str, str],
               edges: Mapping[tuple[str, str], str],
               incidents: Sequence[Mapping[str, Any]]) -> None:
        """One tick's conclusions at ``at``: the health of every node and edge in its graph,
        and the open incidents as the API serves them."""
        if self.covered_from is None:
            self.covered_from = at
        self.last_at = at
        self._log(self._nodes, nodes, at)
        self._log(self._edges, edges, at)
        compact = tuple(_compact(i) for i in incidents)
        key = tuple(_incident_key(i) for i in compact)
        if key != self._incident_key:
            self._incident_key = key
            self._incidents.append((at, compact))
            del self._incidents[:-MAX_INCIDENT_CHANGES]
        if at - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = at
            self.prune(at - self.retention_s)

    def _log(self, tracks: dict[Any, _Track], health: Mapping[Any, str], at: float) -> None:
        code_of = _CODE.get
        for key, state in health.items():  # the hot loop: one lookup per element and tick
            code = code_of(state, 0)
            tr = tracks.get(key)
            if tr is None:
                tr = tracks[key] = _Track()
            elif tr.codes[-1] == code:
                continue
            before = len(tr.codes)
            tr.add(at, code)
            self._changes += len(tr.codes) - before
        if len(tracks) > len(health):
            for key, tr in tracks.items():
                if key not in health and tr.codes and tr.codes[-1] != ABSENT:
                    before = len(tr.codes)
                    tr.add(at, ABSENT)
                    self._changes += len(tr.codes) - before

    def prune(self, horizon: float) -> None:
        """Forget what lies before ``horizon`` (keeping what was in force there)."""
        self._prune_tracks(self._nodes, horizon)
        self._prune_tracks(self._edges, horizon)
        inc = self._incidents
        n = 0
        while n + 1 < len(inc) and inc[n + 1][0] <= horizon:
            n += 1
        del inc[:n]
        if self.covered_from is not None and self.covered_from < horizon:
            self.covered_from = horizon

    def _prune_tracks(self, tracks: dict[Any, _Track], horizon: float) -> None:
        gone = []
        for key, tr in tracks.items():
            before = len(tr.codes)
            if tr.prune(horizon):
                gone.append(key)
            self._changes -= before - len(tr.codes)
        for key in gone:
            self._changes -= len(tracks.pop(key).codes)

    def covers(self, t: float) -> bool:
        return self.covered_from is not None and self.last_at is not None \
            and self.covered_from <= t

    def health_at(self, t: float) -> PastHealth | None:
        """Health in force at ``t`` (the last tick at or before it), None when the log does
        not reach back to ``t``."""
        if not self.covers(t):
            return None
        return PastHealth(_states(self._nodes, t), _states(self._edges, t))

    def incidents_at(self, t: float) -> dict[str, dict[str, Any]] | None:
        """The open incidents at ``t`` as the last tick at or before it saw them, by id;
        None when the log does not reach back to ``t``."""
        if not self.covers(t):
            return None
        found: tuple[dict[str, Any], ...] = ()
        for at, compact in self._incidents:
            if at > t:
                break
            found = compact
        return {str(i["id"]): i for i in found}

    def stats(self) -> dict[str, Any]:
        elements = len(self._nodes) + len(self._edges)
        return {"covered_from": self.covered_from, "elements": elements,
                "changes": self._changes, "incident_changes": len(self._incidents),
                "approx_bytes": elements * TRACK_BYTES + self._changes * CHANGE_BYTES,
                "max_changes_per_element": MAX_CHANGES}


def _states(tracks: Mapping[Any, _Track], t: float) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for key, tr in tracks.items():
        code = tr.at(t)
        if code is None or code == ABSENT:
            continue
        out[key] = HEALTH_STATES[code] if code < len(HEALTH_STATES) else HEALTH_STATES[0]
    return out


def _compact(inc: Mapping[str, Any]) -> dict[str, Any]:
    """What an incident looked like at a tick, enough to show who to page at that time."""
    rc = inc.get("root_cause") or {}
    evidence = rc.get("evidence")
    if not isinstance(evidence, dict):
        evidence = {}
    root = {"service": rc.get("service"), "team": rc.get("team"), "kind": rc.get("kind"),
            "evidence": {"summary": evidence.get("summary")}}
    if rc.get("host") is not None:
        root["host"] = rc.get("host")
    return {"id": inc.get("id"), "started_at": inc.get("started_at"),
            "root_cause": root,
            "impacted": [{"service": d.get("service"), "team": d.get("team"),
                          "share": d.get("share")} for d in inc.get("impacted") or []
                         if isinstance(d, dict)],
            "page": dict(inc.get("page") or {}), "confidence": inc.get("confidence")}


def _incident_key(c: Mapping[str, Any]) -> tuple[Any, ...]:
    rc = c["root_cause"]
    return (c["id"], rc["service"], rc["team"], rc["kind"],
            tuple(d["service"] for d in c["impacted"]), (c["page"] or {}).get("team"))


# -- the range and the parameters ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HistoryRange:
    """What can be shown: data from ``start`` (the retention's horizon, or when observation
    began, or a minute before the oldest archived minute's end) to ``end`` (now);
    ``earliest_at`` is the first ``at`` whose whole window is retained (or, on a collector
    younger than the retention, when observation began), or reached by the archive;
    ``archived_until``: the moments before it are answered from the archive's minutes
    (``collector.archive``)."""

    start: float
    end: float
    earliest_at: float
    window_s: float
    archived_until: float | None = None

    def json(self) -> dict[str, Any]:
        out = {"from": round(self.start, 3), "to": round(self.end, 3),
               "earliest_at": round(self.earliest_at, 3), "window_s": self.window_s}
        if self.archived_until is not None:
            out["archived_until"] = round(self.archived_until, 3)
        return out


def history_range(now: float, started_at: float, retention_s: float,
                  window_s: float, archived: tuple[float, float] | None = None) -> HistoryRange:
    """``archived``: the archive's (earliest moment it answers, its oldest minute's end), if
    it holds any minute."""
    horizon = now - retention_s
    start = max(started_at, horizon)
    # Younger than the retention, nothing was dropped yet: any moment since observation
    # began can be shown (an early window is partial, as the live graph's is at start-up;
    # rates divide by the time observed). Older: the whole window must still be retained.
    # (Until 2026-12-05 a young collector asked for a window as long as the retention had
    # only ``now``: the first had to be at least a window younger than the horizon.)
    earliest = min(started_at if started_at >= horizon else horizon + window_s, now)
    if archived is not None and archived[1] < earliest:
        # Older moments come from the archived minutes (the nearest one's end within a
        # minute of ``at``): the range reaches back to a minute before the oldest one's end.
        return HistoryRange(min(start, archived[0]), now, archived[0], window_s, earliest)
    return HistoryRange(start, now, earliest, window_s)


def parse_at(raw: str) -> float:
    """``at`` as epoch seconds: a number, or an RFC 3339 time with its offset
    (``2026-12-04T14:02:10Z``); ValueError with a message otherwise."""
    text = raw.strip()
    try:
        t = float(text)
    except ValueError:
        t = _rfc3339(text, raw)
    if not math.isfinite(t):
        raise ValueError(f"at must be a finite time, got {raw[:60]!r}")
    return t


def _rfc3339(text: str, raw: str) -> float:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"at must be unix seconds or an RFC 3339 time such as "
                         f"2026-12-04T14:02:10Z, got {raw[:60]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"at={raw[:60]!r} has no UTC offset; add one (Z or +01:00)")
    return parsed.timestamp()


def check_at(t: float, rng: HistoryRange) -> None:
    """ValueError saying the retained range when ``t`` lies outside it."""
    if rng.earliest_at <= t <= rng.end:
        return
    when = "in the future" if t > rng.end else "older than the retained history"
    raise ValueError(
        f"at={t:.3f} is {when}: with window={rng.window_s:g} s, at must lie between "
        f"{rng.earliest_at:.3f} ({iso_utc(rng.earliest_at)}) and {rng.end:.3f} "
        f"({iso_utc(rng.end)}); statistics are retained from {rng.start:.3f} "
        f"({iso_utc(rng.start)}), see GET /api/history")


def past_window(t: float, window_s: float, now: float, bucket_s: float,
                retention_s: float) -> float:
    """The window read at ``t``: beyond the newest ``FINE_BUCKETS`` buckets the statistics
    are 10-bucket ones, so a window reaching there is rounded up to whole coarse buckets
    (at most the retention) and its rate stays exact."""
    if t - window_s >= now - FINE_BUCKETS * bucket_s:
        return window_s
    coarse = COARSE_FACTOR * bucket_s
    return min(math.ceil(window_s / coarse - 1e-9) * coarse, retention_s)


def iso_utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
