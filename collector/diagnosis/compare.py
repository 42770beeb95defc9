"""Did a count or a latency rise significantly between a baseline period and the window?

Shared by root cause (origin errors, self time), blast radius (victim errors, inclusive time)
and health (latency baseline). Both tests want a real change, not a steady level: a service
with a constant 2 % error rate is not "rising", however many requests it serves.

Under head sampling the counts are weighted estimates (see ``window``): a trace kept at keep
fraction ``p`` counts about ``1/p`` times. Ratios need no change, but the evidence does: one
sampled error weighted 10 is one error seen, not ten independent ones (a Poisson test on the
weighted count would be ~``1/p`` times too confident). So both tests judge the unweighted
evidence: ``RatioRise.z`` divides the counts by each period's mean weight (``Cell.weight``)
before ``min_events`` and the Poisson tail, and ``LatencyRise`` counts ``Hist.samples`` (values
actually seen) against ``min_samples``. Below the sampling budget every weight is 1 and
nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collector.diagnosis.window import Hist


def poisson_tail(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    if k > 2_000:  # normal approximation, far out where the sum would be slow
        return 0.5 * math.erfc((k - 0.5 - lam) / math.sqrt(2.0 * lam))
    log_pmf = -lam
    below = 0.0
    for i in range(k):
        if i:
            log_pmf += math.log(lam / i)
        below += math.exp(log_pmf)
    return max(0.0, 1.0 - below)


@dataclass(frozen=True, slots=True)
class RatioRise:
    """A ratio rose when the window's ratio is at least ``factor`` x the baseline's plus
    ``min_abs_rise``, with ``min_events`` events, and so many events would happen by chance
    at the baseline's ratio with probability below ``alpha`` (Poisson tail: small counts are
    judged fairly, so a noisy service's 5 errors instead of 1 are not a fault). The baseline
    is smoothed toward ``prior_ratio`` with weight ``prior_weight`` requests, so a fresh
    collector (no baseline yet) needs a clear signal. The baseline's own count is uncertain
    too: a service that showed no error in 107 requests may well fail 2 % of the time, and
    one with 3 errors in 160 requests 4 %, not 1.9 %. So the baseline's errors are taken
    ``baseline_sigmas`` standard deviations high (``e_b + k * sqrt(e_b + 1)``, an upper
    bound): a short or noisy baseline needs a rise beyond its own noise, and a long clean
    one (hundreds of requests) still lets a few errors in a short window stand out."""

    min_events: int = 3
    factor: float = 2.0
    min_abs_rise: float = 0.03
    alpha: float = 1e-4
    prior_ratio: float = 0.01
    prior_weight: float = 20.0
    baseline_sigmas: float = 2.0

    def baseline(self, e_b: float, n_b: float) -> float:
        high = e_b + self.baseline_sigmas * math.sqrt(max(0.0, e_b) + 1.0)
        return (high + self.prior_ratio * self.prior_weight) / (n_b + self.prior_weight)

    def z(self, e_w: int, n_w: float, e_b: float, n_b: float, w_w: float = 1.0,
          w_b: float = 1.0) -> float | None:
        """How far above chance the window is (a z-like score, for ranking) when the rise is
        significant, else None. ``w_w`` and ``w_b`` are the periods' mean sampling weights
        (``Cell.weight``): the counts are divided by them, so only what was seen is evidence."""
        if w_w != 1.0:
            e_w, n_w = round(e_w / w_w), n_w / w_w
        if w_b != 1.0:
            e_b, n_b = e_b / w_b, n_b / w_b
        if n_w <= 0 or e_w < self.min_events:
            return None
        p_b = self.baseline(e_b, n_b)
        if e_w / n_w < self.factor * p_b + self.min_abs_rise:
            return None
        lam = n_w * p_b
        if poisson_tail(e_w, lam) > self.alpha:
            return None
        return (e_w - lam) / math.sqrt(lam + 1.0)


@dataclass(frozen=True, slots=True)
class LatencyRise:
    """p95 rose when it is at least ``factor`` x the baseline's and ``min_abs_ms`` above it,
    with ``min_samples`` in the window. A short baseline (``short_baseline_samples`` to
    ``min_baseline_samples``: a collector seconds old) says little about the tail, so then
    only a rise of ``short_factor`` x counts; with less, only a p95 above ``no_baseline_ms``
    (by default nothing: a service slow since its first request, as every process is while
    it warms up, has not *become* slow).
    ``min_abs_ms`` is what a page needs a person to notice: a backend's self time going from
    16 ms to 38 ms (measured on a fresh demo on a busy CI host, with no CPU figures to show
    the host's part) is a doubling, and noise; a fault worth waking someone for adds tens of
    milliseconds to every caller.
    Samples are values actually seen (``Hist.samples``), not weighted counts."""

    min_samples: int = 10
    factor: float = 2.0
    min_abs_ms: float = 50.0
    min_baseline_samples: int = 20
    no_baseline_ms: float = math.inf
    quantile: float = 0.95
    short_baseline_samples: int = 5
    short_factor: float = 10.0
    # ``most_above``: a few seconds with fewer than ``min_samples`` visits (a quiet service)
    # need so many of them, and most, slower than the baseline's usual.
    min_slow: int = 3

    def rise(self, window: Hist, base: Hist) -> tuple[float, float | None] | None:
        """``(p95_window_ms, p95_baseline_ms | None)`` when the rise is significant."""
        if window.samples < self.min_samples:
            return None
        p_w = window.quantile(self.quantile)
        if p_w is None:
            return None
        factor = self.factor
        if base.samples < self.min_baseline_samples:
            if base.samples < self.short_baseline_samples:
                return (p_w, None) if p_w >= self.no_baseline_ms else None
            factor = max(factor, self.short_factor)
        p_b = base.quantile(self.quantile)
        if p_b is None:
            return None
        if p_w >= factor * p_b and p_w - p_b >= self.min_abs_ms:
            return p_w, p_b
        return None

    def most_above(self, window: Hist, base: Hist,
                   tail: float | None) -> tuple[float, float] | None:
        """``rise`` for a window too small for it (fewer than ``min_samples`` visits, as a
        quiet service has in a few seconds): at least ``min_slow`` visits seen, and more than
        half of the window's, lie above the bar ``rise`` sets for the window's ``quantile``
        (``factor`` x the baseline's and ``min_abs_ms`` above it) and above ``tail`` (the
        baseline's p95, when given). Returns ``(window quantile, baseline quantile)``. Three
        visits of a few milliseconds each taking 400 ms are a fault; waiting for ten of them at
        two requests a second is five seconds of paging late."""
        if window.samples < self.min_slow or window.samples >= self.min_samples \
                or base.samples < self.short_baseline_samples:
            return None
        factor = self.factor if base.samples >= self.min_baseline_samples \
            else max(self.factor, self.short_factor)
        p_b = base.quantile(self.quantile)
        p_w = window.quantile(self.quantile)
        if p_b is None or p_w is None:
            return None
        bar = max(factor * p_b, p_b + self.min_abs_ms, tail or 0.0)
        above = window.count_above(bar)
        seen = above * window.samples / window.count  # unweighted, as ``samples``
        if seen >= self.min_slow and 2 * above > window.count:
            return p_w, p_b
        return None
