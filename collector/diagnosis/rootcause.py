"""Root cause: which services (or databases, external peers) a failure starts at.

Traces first. For every service seen in the detection window (the last ``detect_window_s``
seconds of the snapshot's window), compare it with its own baseline — the last ``baseline_s``
seconds before the window in which it was not itself a root cause ("the last healthy
period", ``ServiceWindows.baseline``), so a long fault does not become "normal". The
evaluation marks a candidate's buckets (``Found.to_mark``) only once a baseline exists (a
fresh collector learns a steady noisy service as normal rather than freezing it as a fault):

- ``errors``: the count of error *origins* blamed on it (see ``traces``) rose significantly
  (``compare.RatioRise``). Callers that only passed an error on are victims, not origins; a
  caller that absorbed an optional dependency's failure is neither. A steady error rate that
  did not change is not a rise.
- ``latency``: its *own* time p95 rose (``compare.LatencyRise``): its self time without the
  part its callers' CLIENT spans add (``Cell.own_hist``; a database's is its callers' CLIENT
  span). Inclusive time every caller inherits is not self time, so callers are not
  candidates; nor are the callees of a caller starved of CPU, whose late reading of every
  answer lifts all their self times alike. Against a short history (the
  service seen for less than ``short_history_s``, 30 s, before the window: a collector or a
  demo just started, its processes warming up on a busy host) only a rise of ``short_factor``
  (x10) counts.
- ``down``: calls into it fail with no server span (refused, timeout) and either the scrape
  says ``up`` is False, or it served nothing in the window, or its errors rose and nearly all
  of them (``down_share``) are such unanswered calls; or, when its callers send no spans (users,
  a load balancer), its scrape, answered before, is refused and nothing reached it for as long
  as its usual traffic takes to send ``GONE_EXPECTED`` requests (one to three seconds).

A fault that began seconds ago is diluted in a 20 s window: at 20 requests/s, 3 % more errors
than before takes 12 extra errors, and a p95 needs 5 % of 400 visits to be slow. So a service
with no candidate over the detection window is judged again over the most recent buckets (the
last ``recent_window_s`` seconds of finished traces, then three times that, then for errors
only ``ERRORS_LOOK`` times, in the quarter-second buckets the windows keep for the last few
seconds): the same error and down tests, and for latency the *median* own time instead of the
p95, which must also be above the baseline's p95 (most requests slower than nearly all before:
a busy host's noise moves the median into the usual tail, not past it); a quiet service, whose
usual traffic brings fewer visits to the window than a median needs
(``LatencyRise.min_samples``; at 6 requests/s in one second, at 2 in three), needs three of
them, more than half, above that bar (``LatencyRise.most_above``). A busier service's window
is thin when its traces are late (a busy host's moment, which a few slow visits cannot be told
from) or its slowed requests held its callers back; it is left to the longer windows. A fault
that slows most requests moves the median at once; a few slow requests (a GC pause) move a
short window's p95 but not its median, and a fault that slows only some requests is left to
the detection window's p95.
Looking three times (four for errors) at most quadruples the chance of a false alarm, which
``alpha`` keeps small.

Virtual nodes (databases, external APIs) get their errors from CLIENT spans with no server
half and their latency from those spans' durations, so they can be root causes too.

Metrics second, when traces say nothing about a node: a node whose callers' mesh sidecars
found no healthy upstream or could not connect (``collector.mesh``: ``mesh_down``, from Envoy's
UH / UF response flags) is a ``down`` candidate; a node the scrape reports down with no
traffic is a ``down`` candidate; a ``failing`` node with no trace data, at least
``min_events`` errors, and not upstream of another candidate is an ``errors`` candidate, with
lower confidence (one failed call of ten is noise, not a root cause).

Each candidate is a ``RootCause`` (``assessment``) with evidence ``{"summary", "trace_ids",
"counts", "before", "after"}``, ranked by confidence. One entry per service; when several
kinds apply the strongest is reported (down, then errors, then latency). Independent faults
stay separate entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from collector.diagnosis.assessment import DOWN, ERRORS, KIND_SEVERITY, LATENCY, RootCause
from collector.diagnosis.compare import LatencyRise, RatioRise
from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.window import Cell
from collector.model import Node, Snapshot

DETECT_WINDOW_S = 20.0
RECENT_WINDOW_S = 1.0
BASELINE_S = 300.0
MAX_ROOT_CAUSES = 20
# A latency candidate of the last second against a thin baseline (a fresh collector or demo)
# is named only when it has been found on every tick for this long.
THIN_CONFIRM_S = 1.0

# The last look at the recent seconds, in recent windows, for errors only: a quiet service's
# third failure (``RatioRise.min_events``) comes seconds after its first (at 1 error/s, more
# than 3 s later one time in four), and the detection window then needs a fourth. Latency
# over so long is left to the detection window's p95 and to the shared-host step's windows.
ERRORS_LOOK = 6

# A service whose scrape is refused is gone once it served nothing for as long as its usual
# traffic takes to send this many requests (none of 5 expected: chance below 1 %).
GONE_EXPECTED = 5.0

OwnerLookup = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class RootCauseConfig:
    detect_window_s: float = DETECT_WINDOW_S
    recent_window_s: float = RECENT_WINDOW_S  # 0: judge the detection window only
    baseline_s: float = BASELINE_S
    errors: RatioRise = field(default_factory=RatioRise)
    latency: LatencyRise = field(default_factory=LatencyRise)
    down_share: float = 0.8  # share of calls failing with no server span that means "down"
    min_baseline_requests: int = 50  # fewer: no baseline yet, so do not freeze one
    # A service seen for less than this before the window (a collector or a demo seconds
    # old) has a baseline of its warm-up: only a rise of ``latency.short_factor`` counts.
    short_history_s: float = 30.0
    max_root_causes: int = MAX_ROOT_CAUSES


def periods(now: float, window_s: float, cfg: RootCauseConfig,
            bucket_s: float) -> tuple[float, float, float]:
    """``(window_start, baseline_start, baseline_end)`` for a snapshot at ``now``."""
    t0 = now - min(window_s, cfg.detect_window_s)
    return t0, t0 - cfg.baseline_s, t0 - bucket_s


@dataclass(slots=True)
class Found:
    """What one evaluation's root-cause step found: the candidates, ranked, and the services
    whose window buckets should be kept out of future baselines (judged against a real one)."""

    causes: list[RootCause]
    to_mark: list[str]
    window_start: float
    # Per service, the own time (ms) a visit must exceed to count as slow for the requests
    # above it (``ServiceWindows.slow_ms``): the latency rule's threshold on its baseline.
    slow_ms: dict[str, float]


class RootCauseFinder:
    """The root-cause step of an evaluation: reads the trace windows and a snapshot (the
    caller marks ``Found.to_mark``). Its one state, moved by evaluation ticks only: since
    when each service has had a latency candidate in the recent window against a thin
    baseline on every tick (such a candidate must last ``THIN_CONFIRM_S``, two ticks at a 1 s
    interval, whatever the interval)."""

    def __init__(self, diag: TraceDiagnosis, config: RootCauseConfig | None = None,
                 owner_of: OwnerLookup | None = None) -> None:
        self.diag = diag
        self.cfg = config or RootCauseConfig()
        self.owner_of = owner_of
        self._recent_latency: dict[str, float] = {}
        # Candidates the last ``find`` held back, service -> (candidate, why).
        self.held: dict[str, tuple[RootCause, str]] = {}

    def find(self, snap: Snapshot) -> Found:
        now = snap.generated_at
        windows = self.diag.windows
        t0, b0, b1 = periods(now, snap.window_s, self.cfg, windows.bucket_s)
        names = set(windows.services(t0, now)) | set(snap.nodes)
        found: list[RootCause] = []
        quiet: list[str] = []
        established: set[str] = set()  # candidates judged against a real baseline
        served_before: set[str] = set()  # quiet now, but served requests in their baseline
        slow_ms: dict[str, float] = {}
        recent_latency: dict[str, float] = {}
        held: dict[str, tuple[RootCause, str]] = {}
        lat = self.cfg.latency
        for name in sorted(names):
            win = windows.aggregate(name, t0, now)
            base = windows.baseline(name, b1, self.cfg.baseline_s)
            node = snap.nodes.get(name)
            if base.own_hist.samples >= lat.short_baseline_samples:
                p95 = base.own_hist.quantile(0.95) or 0.0
                slow_ms[name] = max(lat.factor * p95, p95 + lat.min_abs_ms)
            if win.requests == 0:
                quiet.append(name)
                if base.requests > 0:
                    served_before.add(name)
                continue
            if self._gone(name, node, win, now, t0):
                # Its scrape, answered before, is refused and it served nothing in the last
                # seconds, while the detection window still holds what it served before:
                # gone. Callers that send no spans (users, a load balancer) leave no refused
                # calls to see it by.
                quiet.append(name)
                served_before.add(name)
                continue
            cands = self._trace_candidates(name, win, base, node)
            unanswered = win.client_only_errors >= self.cfg.down_share * max(1, win.origins)
            if cands and unanswered and all(c.kind == ERRORS for c in cands) \
                    and 0 < self.cfg.recent_window_s < now - t0:
                # Its new failures are calls that got no answer, while the detection window
                # still holds what it served before: the last seconds say whether it is down.
                recent = self._recent_candidates(name, node, now, base)
                cands = [c for c in recent if c.kind == DOWN] or cands
            if not cands and 0 < self.cfg.recent_window_s < now - t0:
                cands = self._recent_candidates(name, node, now, base)
                if cands and all(c.kind == LATENCY for c in cands) \
                        and base.requests / base.weight < self.cfg.min_baseline_requests:
                    # Against a thin baseline (a collector or demo starting, when processes
                    # warm up and the host is busy) a second of slow medians is as often a
                    # busy moment as a fault: it must still be there a second later.
                    since = recent_latency[name] = self._recent_latency.get(name, now)
                    if now - since < THIN_CONFIRM_S - 1e-6:
                        held[name] = (cands[0], "latency in the last second against a thin "
                                                f"baseline: must still be there "
                                                f"{THIN_CONFIRM_S:g} s later")
                        cands = []
            if cands:
                found.append(min(cands, key=lambda c: KIND_SEVERITY[c.kind]))
                if base.requests / base.weight >= self.cfg.min_baseline_requests:
                    established.add(name)
        found.extend(self._metric_candidates(snap, quiet, found, served_before))
        found.sort(key=lambda c: (-c.confidence, -c.evidence["counts"].get("excess", 0),
                                  c.service))
        found = [replace(c, team=self._team(c.service, snap.nodes.get(c.service)))
                 for c in found[: self.cfg.max_root_causes]]
        self._recent_latency = recent_latency
        self.held = held
        return Found(found, [c.service for c in found if c.service in established], t0, slow_ms)

    def _gone(self, name: str, node: Node | None, win: Cell, now: float, t0: float) -> bool:
        """It answered requests in the window and its scrape before, its scrape is refused now
        (not timed out, not failing otherwise) and nothing reached it lately. A process still
        starting (never scraped up) or one serving slowly is not gone."""
        if node is None or node.kind != "service" or node.meta.get("up") is not False \
                or not node.meta.get("scrape_refused") \
                or win.requests - win.client_only <= 0 \
                or not 0 < self.cfg.recent_window_s < now - t0:
            return False
        # Nothing for as long as its usual traffic takes to send GONE_EXPECTED requests (a
        # busy entry point is seen gone in a second), at most three recent windows.
        rate = (win.requests - win.client_only) / win.weight / max(1e-9, now - t0)
        r = self.cfg.recent_window_s
        quiet_s = min(3 * r, max(r, GONE_EXPECTED / max(rate, 1e-9)))
        start = now - self.diag.assembler.recent_lag_s - quiet_s
        return self.diag.windows.recent(name, start, now).requests == 0

    def _recent_candidates(self, name: str, node: Node | None, now: float,
                           base: Cell) -> list[RootCause]:
        """Judge the last few seconds of finished traces (recorded when they finish: once
        whole, or ``quiet_s`` after their last span) against the baseline ``base``; when that
        is thin (a collector only seconds old has none before its detection window), against
        everything before the recent window instead."""
        windows = self.diag.windows
        newest = now - self.diag.assembler.recent_lag_s
        r = self.cfg.recent_window_s
        looks = (r, 3 * r, ERRORS_LOOK * r)
        cells = windows.recent_since(name, [newest - s for s in looks], now)
        for span_s, recent in zip(looks, cells, strict=True):
            start = newest - span_s
            if not recent.requests:
                continue
            if base.requests / base.weight < self.cfg.min_baseline_requests:
                base = windows.baseline(name, start - windows.bucket_s, self.cfg.baseline_s)
            # Fewer visits than a median needs, as its usual traffic brings to a window this
            # long: a quiet service. A busier one's window is thin when its traces are late
            # (a busy host's moment), and a few slow ones then prove nothing.
            few = recent.own_hist.samples < self.cfg.latency.min_samples \
                and _usual_visits(base, windows.bucket_s) * span_s < self.cfg.latency.min_samples
            cands = self._trace_candidates(name, recent, base, node, recent=True, few=few)
            if span_s > 3 * r:
                cands = [c for c in cands if c.kind == ERRORS]
            if cands:
                return cands
        return []

    def _team(self, name: str, node: Node | None) -> str | None:
        if node is not None and node.team:
            return node.team
        owner = self.owner_of(name) if self.owner_of else None
        team = owner.get("team") if owner else None
        return team if isinstance(team, str) else None

    def _trace_candidates(self, name: str, win: Cell, base: Cell, node: Node | None,
                          recent: bool = False, few: bool = False) -> list[RootCause]:
        """Candidates for ``name`` judged on ``win`` against ``base``; ``recent`` when ``win``
        is the short recent window (latency then also needs a significant count of slow
        visits, and the summary says which window); ``few`` when the window holds fewer
        visits than a median needs and the service's usual traffic brings no more (a quiet
        service: ``most_above`` then)."""
        cfg = self.cfg
        out: list[RootCause] = []
        served_w = win.requests - win.client_only
        served_b = base.requests - base.client_only
        virtual = node.kind == "virtual" if node is not None else (served_w + served_b == 0)
        up = node.meta.get("up") if node is not None else None
        if up is False and node is not None and node.meta.get("scrape_timed_out"):
            up = None  # a scrape that timed out: starved or hung, not shown to be gone
        before = _period(base)
        after = _period(win)
        callers = ", ".join(sorted(win.callers)[:5]) or "its callers"

        z = cfg.errors.z(win.origins, win.requests, base.origins, base.requests, win.weight,
                         base.weight)
        no_answer = win.client_only_errors
        # Refused calls say nothing listens; timed-out ones only that nothing answered in
        # time, which a starved or hung process does too (and its server spans may simply
        # arrive late). Without the scrape saying so, timeouts alone mean down only when the
        # whole detection window saw it serve nothing: never from the last few seconds.
        refused = max(0, no_answer - win.no_answer_timeouts)
        unanswered = no_answer if not recent and served_w == 0 else refused
        mean_w = win.weight  # minimum counts are of calls seen, not sampling-weighted ones
        is_down = (not virtual and no_answer > 0
                   and (up is False
                        or (served_w == 0 and unanswered >= cfg.down_share * win.client_only
                            and unanswered / mean_w >= cfg.errors.min_events)))
        if virtual and win.client_only / mean_w >= cfg.errors.min_events and z is not None \
                and no_answer >= 0.95 * win.client_only:
            is_down = True
        # Failures that rose and are nearly all unanswered calls (refused, no server span) are
        # a service going down, seen before the scrape notices or its served requests age out
        # of the window (the recent window then shows it serving nothing). One that answers
        # more calls than it leaves unanswered is not down: its callers time out on it.
        if not virtual and z is not None and refused / mean_w >= cfg.errors.min_events \
                and refused >= cfg.down_share * win.origins and served_w <= refused:
            is_down = True
        p_b = base.origins / base.requests if base.requests else 0.0
        p_w = win.origin_ratio
        excess = max(0.0, win.origins - win.requests * cfg.errors.baseline(base.origins,
                                                                        base.requests))
        counts = {"requests": win.requests, "origin_errors": win.origins,
                  "no_answer_errors": no_answer, "no_answer_timeouts": win.no_answer_timeouts,
                  "failed": win.errors,
                  "absorbed_by_callers": win.origins_absorbed, "excess": round(excess, 1)}
        if is_down:
            why = "the scrape fails and " if up is False else ""
            how = ("connection refused" if not win.no_answer_timeouts else
                   "timed out" if win.no_answer_timeouts >= no_answer else
                   f"{no_answer - win.no_answer_timeouts} refused, "
                   f"{win.no_answer_timeouts} timed out")
            summary = (f"{name} is down: {why}{no_answer} calls from {callers} got no answer "
                       f"({how}, no server span)")
            conf = 0.97 if up is False else 0.9
            out.append(_cand(name, DOWN, virtual, conf, summary, win.origin_traces,
                             counts, before, after))
        elif z is not None:
            where = "calls to it" if virtual else "requests"
            summary = (f"{name}: {win.origins} of {win.requests} {where} ({p_w:.1%}) failed at "
                       f"{name} itself, up from {p_b:.1%} before")
            if no_answer:
                summary += f"; {no_answer} calls from {callers} got no answer"
            if win.origins_absorbed:
                summary += (f"; callers fell back around {win.origins_absorbed} of these "
                            f"failures")
            if mean_w > 1.0:
                summary += f" (estimated from about 1 in {mean_w:.1f} traces, sampled under load)"
            conf = (0.5 + 0.25 * min(1.0, max(0.0, z - 3.0) / 10.0)
                    + 0.24 * min(1.0, max(0.0, p_w - p_b) / 0.3))
            out.append(_cand(name, ERRORS, virtual, conf, summary, win.origin_traces,
                             counts, before, after))
        rule = replace(cfg.latency, quantile=0.5) if recent else cfg.latency
        if base.buckets * self.diag.windows.bucket_s < cfg.short_history_s:
            rule = replace(rule, factor=max(rule.factor, rule.short_factor))
        stat = "median" if recent else "p95"
        lat = rule.rise(win.own_hist, base.own_hist)
        if lat is None and few:
            # Too few visits for a median, as the service usually has (a quiet service): most
            # of them, and three at least, far slower than nearly all before.
            lat = rule.most_above(win.own_hist, base.own_hist,
                                  base.own_hist.quantile(cfg.latency.quantile))
        if lat is not None and recent and lat[1] is not None:
            # A few seconds' median judged fast: most requests must be slower than nearly
            # all of the baseline's (its p95), not merely moved into its usual tail, as a
            # busy host's noise does. Subtler rises are left to the detection window's p95.
            tail = base.own_hist.quantile(cfg.latency.quantile)
            if tail is not None and lat[0] < tail:
                lat = None
        if lat is not None:
            p95_w, p95_b = lat
            if p95_b is None:
                summary = (f"{name}: its own time {stat} is {p95_w:.0f} ms (no baseline yet); "
                           f"callers inherit it")
                conf = 0.5
            else:
                summary = (f"{name}: its own time {stat} is {p95_w:.0f} ms, up from "
                           f"{p95_b:.0f} ms; callers inherit it")
                k = p95_w / max(p95_b, 1e-3)
                conf = (0.5 + 0.25 * min(1.0, (k - cfg.latency.factor) / 5.0)
                        + 0.24 * min(1.0, win.own_hist.samples / 100.0))
            if win.timeouts:
                summary += f"; {win.timeouts} calls timed out waiting for it"
            lat_counts = dict(counts, excess=round(win.own_hist.count * 0.05, 1),
                              timeouts=win.timeouts)
            out.append(_cand(name, LATENCY, virtual, conf, summary,
                             [t for _, t in win.slow_traces], lat_counts, before, after))
        if recent:
            out = [replace(c, evidence={**c.evidence, "window": "recent",
                                        "summary": c.evidence["summary"]
                                        + " (in the last few seconds)"})
                   for c in out]
        return out

    def _metric_candidates(self, snap: Snapshot, quiet: list[str], found: list[RootCause],
                           served_before: set[str]) -> list[RootCause]:
        out: list[RootCause] = []
        blamed = {c.service for c in found}
        upstream = _upstream_of(snap, blamed)
        for name in quiet:
            node = snap.nodes.get(name)
            # Virtual nodes exist only through traces; a quiet one is named differently there.
            if node is None or node.kind != "service" or name in upstream:
                continue
            counts = {"calls": node.meta.get("calls", 0), "errors": node.meta.get("errors", 0),
                      "excess": 0}
            after = {"error_ratio": node.error_ratio, "p95_ms": node.p95_ms,
                     "up": node.meta.get("up")}
            mesh = node.meta.get("mesh")
            if node.meta.get("mesh_down") and isinstance(mesh, dict):
                # The sidecars of its callers found no healthy upstream (UH) or could not
                # connect (UF): nothing answers, whether or not it sends traces.
                flags = ", ".join(f"{f} x{n}" for f, n in mesh.get("response_flags", {}).items()
                                  if f in ("UH", "UF"))
                summary = (f"{name} is down: {mesh.get('no_upstream')} of {mesh.get('calls')} "
                           f"calls into it failed in the {mesh.get('mesh')} mesh with {flags} "
                           f"(no healthy upstream / upstream connection failure)")
                out.append(_cand(name, DOWN, False, 0.85, summary, [], counts, {},
                                 {**after, "evidence": "mesh", "response_flags":
                                  mesh.get("response_flags")}))
                continue
            if node.meta.get("up") is False:
                into = [e for e in snap.edges.values() if e.target == name]
                no_answer = sum(int(e.meta.get("client_only_errors", 0) or 0) for e in into)
                if no_answer:
                    summary = (f"{name} is down: the scrape fails and {no_answer} calls got no "
                               f"answer (connection refused or timed out)")
                    conf = 0.9
                elif name not in served_before:
                    # Never seen serving (still starting, or never deployed): it has not
                    # *become* down, so no incident; its health still shows down.
                    continue
                else:
                    summary = f"{name} is down: the scrape fails and it serves no traffic"
                    conf = 0.6
                out.append(_cand(name, DOWN, node.kind == "virtual", conf, summary, [],
                                 counts, {}, after))
            elif node.health == "failing" and counts["errors"] >= self.cfg.errors.min_events \
                    and not any(
                    snap.nodes[e.target].health in ("failing", "down")
                    for e in snap.edges.values()
                    if e.source == name and e.target in snap.nodes):
                summary = (f"{name}: {node.error_ratio:.1%} of its requests fail (from metrics; "
                           f"no traces explain it)")
                if node.meta.get("no_traces") and isinstance(mesh, dict):
                    summary = (f"{name}: {node.error_ratio:.1%} of its requests fail (from the "
                               f"{mesh.get('mesh')} mesh's metrics; it sends no traces)")
                out.append(_cand(name, ERRORS, node.kind == "virtual", 0.4, summary, [],
                                 counts, {}, after))
        return out


def _upstream_of(snap: Snapshot, targets: set[str]) -> set[str]:
    callers: dict[str, list[str]] = {}
    for src, dst in snap.edges:
        callers.setdefault(dst, []).append(src)
    seen: set[str] = set()
    frontier = list(targets)
    for _ in range(len(snap.nodes) + 1):  # bounded walk
        if not frontier:
            break
        nxt = []
        for t in frontier:
            for src in callers.get(t, ()):
                if src not in seen and src not in targets:
                    seen.add(src)
                    nxt.append(src)
        frontier = nxt
    return seen


def _usual_visits(base: Cell, bucket_s: float) -> float:
    """Visits a second in ``base``'s buckets that saw the service (an upper bound on its usual
    rate when it is idle at times: such a service is then judged as a busier one)."""
    return base.own_hist.samples / (bucket_s * base.buckets) if base.buckets else math.inf


def _period(c: Cell) -> dict[str, Any]:
    p95, own = c.self_hist.quantile(0.95), c.own_hist.quantile(0.95)
    return {"requests": c.requests, "origin_errors": c.origins,
            "origin_error_ratio": round(c.origin_ratio, 4),
            "self_p95_ms": round(p95, 1) if p95 is not None else None,
            "own_p95_ms": round(own, 1) if own is not None else None}


def _cand(name: str, kind: str, virtual: bool, conf: float, summary: str,
          traces: list[bytes], counts: dict[str, Any], before: dict[str, Any],
          after: dict[str, Any]) -> RootCause:
    return RootCause(name, kind, None, virtual, round(max(0.0, min(0.99, conf)), 3),
                     {"summary": summary, "trace_ids": [t.hex() for t in traces[:5]],
                      "counts": counts, "before": before, "after": after})
