"""Blast radius: the services a root cause hurts, each with evidence, separate from it.

From the traces first, with no baseline needed: a service is impacted by a root cause when
its own requests failed with the root cause's error origin below them in the same trace
(``Cell.victim_of``: the error propagated up through failed spans), or, for a latency root
cause, were slowed by a slow visit of the root cause below them (``Cell.slowed_by``). Each
impact says how many of its requests in the detection window that explains, out of how many
failed (or were slow), with example trace ids. So the callers of a failing payment service
are listed in the same evaluation that names payment, even on a collector seconds old.

A latency candidate found in the same tick with another candidate below its requests (its
slow visits, or its error origins) is that one's effect when its own time rose by less than
``effect_share`` of the other's: a caller's requests pile up while a callee is slow, and on a
busy host its own time rises with them. It is listed as impacted and held back (``held``),
not paged. Only a service with no such traces falls back on a rise: its inclusive p95 rose (latency
root causes), or, with no traces at all, the graph's health says it is degraded. The walk
goes from the root cause up the graph's edges (callers of callers, a bounded loop) and on
only through impacted callers: a caller that fell back around an optional dependency
(absorbed more of the root cause's failures than it passed on) is not impacted, and neither
are its callers through it. Services the traces name but the graph does not connect (yet)
are added too. Virtual nodes (``user``) are never listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from collector.diagnosis.assessment import (
    BY_RISE,
    BY_TRACES,
    LATENCY,
    SHARED_HOST,
    Impact,
    RootCause,
)
from collector.diagnosis.compare import LatencyRise
from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.rootcause import RootCauseConfig
from collector.diagnosis.window import Cell
from collector.model import Snapshot

MAX_IMPACTED = 200


@dataclass(frozen=True, slots=True)
class BlastConfig:
    # Requests with the root cause's origin below them that make a service impacted: one
    # could be a coincidence of two faults in one request; two in the window are not.
    min_explained: int = 2
    # A latency candidate with another candidate below its requests is that one's effect
    # unless its own time rose by at least this share of what the other's did.
    effect_share: float = 0.5
    latency: LatencyRise = field(default_factory=lambda: LatencyRise(
        min_samples=5, factor=1.5, min_abs_ms=20.0, no_baseline_ms=1000.0))
    max_impacted: int = MAX_IMPACTED


class BlastRadius:
    """The blast-radius step of an evaluation: reads the windows; its one state is what the
    last ``apply`` held back."""

    def __init__(self, diag: TraceDiagnosis, rootcause: RootCauseConfig | None = None,
                 config: BlastConfig | None = None) -> None:
        self.diag = diag
        self.rc = rootcause or RootCauseConfig()
        self.cfg = config or BlastConfig()
        # The candidates the last ``apply`` took as another's effect, service -> (candidate,
        # why): see ``Assessment.held_back``.
        self.held: dict[str, tuple[RootCause, str]] = {}

    def apply(self, snap: Snapshot, causes: Sequence[RootCause],
              t0: float) -> list[RootCause]:
        """``causes`` with their ``impacted`` filled in, for the window from ``t0``."""
        callers: dict[str, list[str]] = {}
        for src, dst in snap.edges:
            callers.setdefault(dst, []).append(src)
        self.held = {}
        causes = self._without_effects(snap, causes, t0)
        cause_names = {c.service for c in causes}
        out = []
        for cause in causes:
            if cause.kind == SHARED_HOST:  # its services are in its evidence, not victims
                out.append(cause)
                continue
            impacts = [i for i in self._walk(snap, cause, callers, t0)
                       if i.service not in cause_names and not _is_virtual(snap, i.service)]
            out.append(replace(cause, impacted=tuple(impacts[: self.cfg.max_impacted])))
        return out

    def _without_effects(self, snap: Snapshot, causes: Sequence[RootCause],
                         t0: float) -> list[RootCause]:
        """``causes`` without the latency candidates that are another candidate's effect: at
        least ``min_explained`` of their requests in the window had that candidate's slow
        visit (or error origin) below them, and their own time rose by less than
        ``effect_share`` of what that candidate's did. A caller's requests pile up while a
        callee is slow, and on a busy host its own time rises with them: it is impacted,
        listed in that incident, not a second page."""
        windows = self.diag.windows
        now = snap.generated_at
        effects: dict[str, tuple[RootCause, str]] = {}
        for c in causes:
            if c.kind != LATENCY:
                continue
            win = windows.aggregate(c.service, t0, now)
            for other in causes:
                if other.service == c.service or other.kind == SHARED_HOST:
                    continue
                below = win.slowed_by if other.kind == LATENCY else win.victim_of
                n = below.get(other.service, 0)
                if n < self.cfg.min_explained:
                    continue
                mine, theirs = _own_rise_ms(c), _own_rise_ms(other)
                if other.kind == LATENCY and (mine is None or theirs is None
                                              or mine >= self.cfg.effect_share * theirs):
                    continue
                how = "slow visits" if other.kind == LATENCY else "error origins"
                rose = f", its own time up {mine:.0f} ms against {theirs:.0f} ms there" \
                    if other.kind == LATENCY else ""
                effects[c.service] = (c, f"an effect of {other.service}: {n} of its requests "
                                         f"had {other.service}'s {how} below them{rose}")
                break
        self.held = effects
        return [c for c in causes if c.service not in effects]

    def _walk(self, snap: Snapshot, cause: RootCause, callers: dict[str, list[str]],
              t0: float) -> list[Impact]:
        root = cause.service
        windows = self.diag.windows
        now = snap.generated_at
        impacted: list[Impact] = []
        seen = {root}
        frontier = [root]
        for _ in range(len(snap.nodes) + 1):  # bounded walk upstream
            if not frontier:
                break
            nxt: list[str] = []
            for target in frontier:
                for src in sorted(callers.get(target, ())):
                    if src in seen:
                        continue
                    seen.add(src)
                    hit = self._impact(snap, src, cause, t0)
                    if hit is not None:
                        impacted.append(hit)
                        nxt.append(src)
            frontier = nxt
        # Services the traces name but the graph does not connect (yet) to the root cause. One
        # the graph does connect was reached above or left out on purpose (a caller that fell
        # back on the root cause's failures stops the walk for its callers).
        upstream = _upstream(root, callers)
        for name in windows.services(t0, now):
            if name in seen or name in upstream:
                continue
            win = windows.aggregate(name, t0, now)
            if win.victim_of.get(root) or win.slowed_by.get(root):
                hit = self._impact(snap, name, cause, t0, win)
                if hit is not None:
                    impacted.append(hit)
        return impacted

    def _impact(self, snap: Snapshot, name: str, cause: RootCause, t0: float,
                win: Cell | None = None) -> Impact | None:
        windows = self.diag.windows
        now = snap.generated_at
        root, latency = cause.service, cause.kind == LATENCY
        team = _team(snap, name)
        if win is None:
            win = windows.aggregate(name, t0, now)
        if win.requests == 0:
            node = snap.nodes.get(name)  # no traces: the graph's numbers decide
            if node is None or node.health not in ("degraded", "failing", "down"):
                return None
            calls, errors = node.meta.get("calls", 0), node.meta.get("errors", 0)
            return Impact(name, team, BY_RISE, int(calls or 0), int(errors or 0), 0, (),
                          f"{name} is {node.health} (from metrics; no traces show {root} "
                          f"below it)")
        samples = tuple(t.hex() for t in win.blast_traces.get(root, ()))
        base = windows.baseline(name, t0 - windows.bucket_s, self.rc.baseline_s)
        if latency:
            slowed = win.slowed_by.get(root, 0)
            p95_b = base.incl_hist.quantile(0.95) if base.incl_hist.samples >= 5 else None
            slow = win.incl_hist.count_above(p95_b) if p95_b is not None else slowed
            if slowed >= self.cfg.min_explained:
                return Impact(name, team, BY_TRACES, win.requests, max(slow, slowed), slowed,
                              samples, f"{name}: {slowed} of {win.requests} requests were "
                                       f"slowed by {root}'s own time below them")
            rise = self.cfg.latency.rise(win.incl_hist, base.incl_hist)
            if rise is None:
                return None
            was = f"{rise[1]:.0f} ms" if rise[1] is not None else "no baseline"
            return Impact(name, team, BY_RISE, win.requests, slow, 0, (),
                          f"{name}: its p95 rose to {rise[0]:.0f} ms (was {was}); no traces "
                          f"show {root} below its slow requests")
        failed = win.victim_of.get(root, 0)
        if win.absorbed_from.get(root, 0) > failed:
            # It falls back around this root cause most of the time; the few failures that
            # did reach its callers had other causes in the same request.
            return None
        if failed < self.cfg.min_explained:
            return None
        errors = max(win.errors, failed)
        return Impact(name, team, BY_TRACES, win.requests, errors, failed, samples,
                      f"{name}: {failed} of {win.requests} requests failed with {root}'s "
                      f"error below them ({failed / errors:.0%} of its {errors} failures)")


def _own_rise_ms(c: RootCause) -> float | None:
    """How far a candidate's own-time p95 rose, in ms, from its evidence (None: not given)."""
    before = c.evidence.get("before", {}).get("own_p95_ms")
    after = c.evidence.get("after", {}).get("own_p95_ms")
    if isinstance(before, int | float) and isinstance(after, int | float):
        return float(after) - float(before)
    return None


def _is_virtual(snap: Snapshot, name: str) -> bool:
    node = snap.nodes.get(name)
    return node is not None and node.kind == "virtual"


def _team(snap: Snapshot, name: str) -> str | None:
    node = snap.nodes.get(name)
    return node.team if node is not None else None


def _upstream(root: str, callers: dict[str, list[str]]) -> set[str]:
    """Every service the graph shows calling ``root``, directly or through others."""
    found = {root}
    stack = [root]
    while stack:
        for src in callers.get(stack.pop(), ()):
            if src not in found:
                found.add(src)
                stack.append(src)
    return found
