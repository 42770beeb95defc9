"""Blast-radius appender: the services a root cause hurts, separate from the root cause.

From each root cause in ``snap.meta["root_causes"]``, walk the snapshot's edges backwards
(callers of callers, a bounded loop). A caller is *impacted* when, compared with its own
baseline, either its failures caused by that root cause rose (traces: its SERVER span failed
because the error propagated up from the root cause's origin) or, for a latency root cause,
its inclusive p95 rose. The
walk continues only through impacted callers: a caller that fell back around an optional
dependency is not impacted (it absorbed more of the root cause's failures than it passed
on), and neither are its callers through it. Services the traces name
as victims but the graph does not connect are added too. Virtual nodes (``user``) are never
listed. Sets ``root_cause["impacted"] = [{"service", "team"}]`` and
``node.meta["impacted_by"] = [root-cause services]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.diagnosis.compare import LatencyRise, RatioRise
from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.rootcause import RootCauseConfig, periods
from collector.model import Snapshot

MAX_IMPACTED = 200


@dataclass(frozen=True, slots=True)
class BlastConfig:
    victims: RatioRise = field(default_factory=lambda: RatioRise(
        min_events=2, factor=2.0, min_abs_rise=0.01, alpha=1e-3))
    latency: LatencyRise = field(default_factory=lambda: LatencyRise(
        min_samples=5, factor=1.5, min_abs_ms=20.0, no_baseline_ms=1000.0))
    max_impacted: int = MAX_IMPACTED


class BlastRadiusAppender:
    name = "blast"

    def __init__(self, diag: TraceDiagnosis, default_window_s: float,
                 rootcause: RootCauseConfig | None = None,
                 config: BlastConfig | None = None) -> None:
        self.diag = diag
        self.default_window_s = default_window_s
        self.rc = rootcause or RootCauseConfig()
        self.cfg = config or BlastConfig()

    def append(self, snap: Snapshot) -> None:
        causes: list[dict[str, Any]] = snap.meta.get("root_causes", [])
        if not causes:
            return
        windows = self.diag.windows
        t0, b0, b1 = periods(snap, self.rc, windows.bucket_s)
        callers: dict[str, list[str]] = {}
        for src, dst in snap.edges:
            callers.setdefault(dst, []).append(src)
        cause_names = {c["service"] for c in causes}
        all_impacted: set[str] = set()
        for cause in causes:
            impacted = [n for n in self._walk(snap, cause, callers, t0, b0, b1)
                        if n not in cause_names and not _is_virtual(snap, n)]
            impacted = impacted[: self.cfg.max_impacted]
            cause["impacted"] = [{"service": n, "team": _team(snap, n)} for n in impacted]
            for n in impacted:
                node = snap.nodes.get(n)
                if node is not None:
                    node.meta.setdefault("impacted_by", []).append(cause["service"])
            all_impacted.update(impacted)
        if snap.window_s == self.default_window_s and all_impacted:
            windows.mark(all_impacted, t0, snap.generated_at)  # keep victims' baselines clean

    def _walk(self, snap: Snapshot, cause: dict[str, Any], callers: dict[str, list[str]],
              t0: float, b0: float, b1: float) -> list[str]:
        root, kind = cause["service"], cause["kind"]
        windows = self.diag.windows
        verdicts: dict[str, bool] = {}

        def hurt(name: str) -> bool:
            if name not in verdicts:
                verdicts[name] = self._impacted(snap, name, root, kind, t0, b0, b1)
            return verdicts[name]

        impacted: list[str] = []
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
                    if hurt(src):
                        impacted.append(src)
                        nxt.append(src)
            frontier = nxt
        # Victims the traces name but the graph does not connect (yet).
        for name in windows.services(t0, snap.generated_at):
            if name not in seen and windows.aggregate(
                    name, t0, snap.generated_at).victim_of.get(root) and hurt(name):
                impacted.append(name)
        return impacted

    def _impacted(self, snap: Snapshot, name: str, root: str, kind: str, t0: float,
                  b0: float, b1: float) -> bool:
        windows = self.diag.windows
        win = windows.aggregate(name, t0, snap.generated_at)
        if win.requests == 0:
            node = snap.nodes.get(name)  # no traces: the graph's numbers decide
            return node is not None and node.health in ("degraded", "failing", "down")
        base = windows.baseline(name, b1, self.rc.baseline_s)
        victim = win.victim_of.get(root, 0)
        if win.absorbed_from.get(root, 0) > victim:
            # It falls back around this root cause most of the time; the few failures that
            # did reach its callers had other causes in the same request.
            return False
        if self.cfg.victims.z(win.victim_of.get(root, 0), win.requests,
                              base.victim_of.get(root, 0), base.requests, win.weight,
                              base.weight) is not None:
            return True
        # Slower callers are impacted by a latency root cause only: with an error root cause
        # their latency may have risen for another reason, and a fallback is not an impact.
        return kind == "latency" and \
            self.cfg.latency.rise(win.incl_hist, base.incl_hist) is not None


def _is_virtual(snap: Snapshot, name: str) -> bool:
    node = snap.nodes.get(name)
    return node is not None and node.kind == "virtual"


def _team(snap: Snapshot, name: str) -> str | None:
    node = snap.nodes.get(name)
    return node.team if node is not None else None
