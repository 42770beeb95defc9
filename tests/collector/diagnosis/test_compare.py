"""Unit tests for ``collector.diagnosis.compare``: the Poisson tail, ``RatioRise`` (did an
error ratio rise?) and ``LatencyRise`` (did a p95 rise?), at and around each threshold."""

from __future__ import annotations

import math

import pytest

from collector.diagnosis.compare import LatencyRise, RatioRise, poisson_tail
from collector.diagnosis.window import Hist

# -- poisson_tail -----------------------------------------------------------------------------


def test_poisson_tail_of_zero_or_fewer_events_is_certain() -> None:
    assert poisson_tail(0, 3.0) == 1.0
    assert poisson_tail(-2, 3.0) == 1.0
    assert poisson_tail(0, 0.0) == 1.0


def test_poisson_tail_with_no_expected_events_is_impossible() -> None:
    assert poisson_tail(1, 0.0) == 0.0
    assert poisson_tail(5, -1.0) == 0.0


@pytest.mark.parametrize("lam", [0.1, 1.0, 2.0, 7.5])
def test_poisson_tail_of_one_event_is_one_minus_p_of_none(lam: float) -> None:
    assert poisson_tail(1, lam) == pytest.approx(1.0 - math.exp(-lam), rel=1e-12)


def test_poisson_tail_matches_the_exact_sum_for_small_counts() -> None:
    lam = 1.5
    exact = 1.0 - sum(math.exp(-lam) * lam ** i / math.factorial(i) for i in range(4))
    assert poisson_tail(4, lam) == pytest.approx(exact, rel=1e-12)
    # Two events at rate 1: 1 - e^-1 - e^-1.
    assert poisson_tail(2, 1.0) == pytest.approx(1.0 - 2.0 / math.e, rel=1e-12)


def test_poisson_tail_falls_as_the_count_rises() -> None:
    tails = [poisson_tail(k, 4.0) for k in range(0, 15)]
    assert all(a > b for a, b in zip(tails, tails[1:], strict=False))


def test_poisson_tail_far_beyond_the_mean_is_tiny_and_never_negative() -> None:
    # 1 - (a sum that rounds to 1): at most rounding error above zero, never below.
    for k in (30, 60, 200):
        assert 0.0 <= poisson_tail(k, 1.0) < 1e-15


def test_poisson_tail_uses_the_normal_approximation_above_2000_events_continuously() -> None:
    # Around the mean the tail is about one half on both sides of the switch at k = 2000.
    exact_side = poisson_tail(2000, 2000.0)
    approx_side = poisson_tail(2001, 2000.0)
    assert 0.49 < approx_side < exact_side < 0.51
    assert approx_side == pytest.approx(0.5 * math.erfc(0.5 / math.sqrt(4000.0)), rel=1e-12)
    assert poisson_tail(2500, 100.0) == 0.0
    assert poisson_tail(2500, 2500.0) == pytest.approx(0.5, abs=0.01)


def test_poisson_tail_with_a_huge_mean_and_few_events_is_certain() -> None:
    # exp(-lam) underflows to 0: the tail is 1, not a NaN.
    assert poisson_tail(100, 1e6) == 1.0


# -- RatioRise.baseline -----------------------------------------------------------------------


def test_ratio_baseline_with_no_data_is_the_smoothed_prior_plus_its_noise() -> None:
    # (0 + 2 * sqrt(1) + 0.01 * 20) / (0 + 20)
    assert RatioRise().baseline(0.0, 0.0) == pytest.approx(0.11)


def test_ratio_baseline_takes_the_baseline_errors_two_sigmas_high() -> None:
    # The docstring's example: 3 errors in 160 requests is taken as 4 %, not 1.9 %.
    assert RatioRise().baseline(3.0, 160.0) == pytest.approx(0.04)
    # With no sigmas and no prior weight, it is the plain ratio.
    assert RatioRise(baseline_sigmas=0.0, prior_weight=0.0).baseline(3.0, 160.0) == \
        pytest.approx(3 / 160)


def test_ratio_baseline_of_a_long_clean_period_is_small() -> None:
    assert RatioRise().baseline(0.0, 107.0) == pytest.approx(2.2 / 127)
    assert RatioRise().baseline(0.0, 1000.0) < 0.0022


# -- RatioRise.z ------------------------------------------------------------------------------

# A rule with exact binary numbers: baseline ratio 1/8, so the window must reach
# 2 * 1/8 + 1/4 = 1/2, and significance never blocks (alpha = 1).
EXACT = RatioRise(min_events=1, factor=2.0, min_abs_rise=0.25, alpha=1.0, prior_weight=0.0,
                  baseline_sigmas=0.0)


def test_ratio_rise_exactly_at_factor_times_baseline_plus_min_abs_rise_counts() -> None:
    z = EXACT.z(4, 8.0, 1.0, 8.0)
    lam = 8.0 * 0.125
    assert z == pytest.approx((4 - lam) / math.sqrt(lam + 1.0))


def test_ratio_rise_just_below_factor_times_baseline_plus_min_abs_rise_does_not_count() -> None:
    assert EXACT.z(3, 8.0, 1.0, 8.0) is None  # 3/8 < 1/2


def test_ratio_rise_needs_the_min_abs_rise_as_well_as_the_factor() -> None:
    # 3/8 is three times the baseline's 1/8, but not 1/4 above twice it.
    assert EXACT.z(3, 8.0, 1.0, 8.0) is None
    no_abs = RatioRise(min_events=1, factor=2.0, min_abs_rise=0.0, alpha=1.0,
                       prior_weight=0.0, baseline_sigmas=0.0)
    assert no_abs.z(3, 8.0, 1.0, 8.0) is not None


def test_ratio_rise_needs_min_events_in_the_window() -> None:
    rule = RatioRise()
    # A long clean baseline: 3 errors in 10 requests is a clear rise, 2 are not enough.
    assert rule.z(3, 10.0, 0.0, 10_000.0) == pytest.approx(2.9945, abs=1e-3)
    assert rule.z(2, 10.0, 0.0, 10_000.0) is None
    assert RatioRise(min_events=4).z(3, 10.0, 0.0, 10_000.0) is None


def test_ratio_rise_with_no_window_requests_is_none() -> None:
    assert RatioRise().z(5, 0.0, 0.0, 100.0) is None
    assert RatioRise().z(5, -1.0, 0.0, 100.0) is None


def test_ratio_rise_is_refused_when_the_poisson_tail_is_above_alpha() -> None:
    rule = RatioRise()
    lam = 50.0 * rule.baseline(0.0, 1000.0)
    tail = poisson_tail(3, lam)
    assert 1e-4 < tail < 1e-3
    # 3 errors in 50 requests passes the ratio test but not the significance test...
    assert rule.z(3, 50.0, 0.0, 1000.0) is None
    # ... and passes it once alpha is at the tail, not just below it.
    at = RatioRise(alpha=tail)
    assert at.z(3, 50.0, 0.0, 1000.0) == pytest.approx((3 - lam) / math.sqrt(lam + 1.0))
    assert RatioRise(alpha=tail * 0.999).z(3, 50.0, 0.0, 1000.0) is None
    # One error more is significant at the default alpha.
    assert rule.z(4, 50.0, 0.0, 1000.0) == pytest.approx(3.6979, abs=1e-3)


def test_a_steady_error_rate_is_not_a_rise_however_many_requests() -> None:
    rule = RatioRise()
    assert rule.z(20, 1000.0, 20.0, 1000.0) is None  # 2 % before and after
    assert rule.z(200, 10_000.0, 2000.0, 100_000.0) is None


def test_a_fresh_collector_needs_a_clear_signal() -> None:
    rule = RatioRise()
    # No baseline at all: the prior and its noise put the baseline at 11 %.
    assert rule.z(10, 100.0, 0.0, 0.0) is None  # 10 % is no rise over 11 %
    assert rule.z(24, 100.0, 0.0, 0.0) is None  # below 2 * 11 % + 3 %
    assert rule.z(30, 100.0, 0.0, 0.0) == pytest.approx(5.4848, abs=1e-3)


def test_a_short_noisy_baseline_needs_a_rise_beyond_its_own_noise() -> None:
    rule = RatioRise()
    # 10 errors in 50 requests (20 %): after 1 error in 20 requests (baseline taken as
    # about 10 %) that is within the baseline's noise; after 0 errors in 1000 it is a rise.
    assert rule.baseline(1.0, 20.0) == pytest.approx((1 + 2 * math.sqrt(2) + 0.2) / 40)
    assert rule.z(10, 50.0, 1.0, 20.0) is None
    assert rule.z(10, 50.0, 0.0, 1000.0) is not None
    # A steady 5 % over a long baseline: doubling to 10 % in 50 requests is 5 errors
    # where 3.2 were expected, not significant.
    assert rule.z(5, 50.0, 50.0, 1000.0) is None


def test_a_bigger_rise_scores_higher() -> None:
    rule = RatioRise()
    scores = [rule.z(e, 100.0, 1.0, 1000.0) for e in (5, 10, 20, 40)]
    assert all(s is not None for s in scores)
    values = [s for s in scores if s is not None]
    assert values == sorted(values) and len(set(values)) == 4


def test_weighted_window_counts_are_judged_as_the_evidence_actually_seen() -> None:
    rule = RatioRise()
    # 30 weighted errors at mean weight 10 are 3 errors seen in 10 requests.
    assert rule.z(30, 100.0, 0.0, 10_000.0, w_w=10.0) == rule.z(3, 10.0, 0.0, 10_000.0)
    # 20 weighted errors at weight 10 are 2 seen: below min_events, though 20 unweighted
    # errors would be plenty.
    assert rule.z(20, 100.0, 0.0, 10_000.0) is not None
    assert rule.z(20, 100.0, 0.0, 10_000.0, w_w=10.0) is None


def test_weighted_baseline_counts_are_divided_by_the_baseline_weight() -> None:
    rule = RatioRise()
    assert rule.z(6, 40.0, 20.0, 2000.0, w_b=10.0) == rule.z(6, 40.0, 2.0, 200.0)
    # The baseline's noise term is judged on the seen counts, so the weighted baseline is
    # noisier (higher) than the same ratio with ten times the evidence.
    assert rule.baseline(2.0, 200.0) > rule.baseline(20.0, 2000.0)


def test_unit_weights_change_nothing() -> None:
    rule = RatioRise()
    assert rule.z(7, 80.0, 3.0, 900.0, 1.0, 1.0) == rule.z(7, 80.0, 3.0, 900.0)


# -- LatencyRise ------------------------------------------------------------------------------


def hist(ms: float, n: int, weight: int = 1) -> Hist:
    h = Hist()
    for _ in range(n):
        h.add(ms, weight)
    return h


def p95(ms: float) -> float:
    q = hist(ms, 1).quantile(0.95)
    assert q is not None
    return q


def test_latency_rise_reports_window_and_baseline_p95() -> None:
    rise = LatencyRise().rise(hist(100.0, 10), hist(20.0, 20))
    assert rise == (p95(100.0), p95(20.0))
    assert rise is not None and rise[0] == pytest.approx(106.2, abs=0.1)


def test_latency_rise_needs_min_samples_in_the_window() -> None:
    base = hist(20.0, 20)
    assert LatencyRise().rise(hist(100.0, 9), base) is None
    assert LatencyRise().rise(hist(100.0, 10), base) is not None


def test_latency_rise_counts_samples_seen_not_weighted_count() -> None:
    # Five values at weight 4: a count of 20, but only 5 values seen.
    window = hist(100.0, 5, weight=4)
    assert (window.count, window.samples) == (20, 5)
    assert LatencyRise().rise(window, hist(20.0, 20)) is None
    assert LatencyRise(min_samples=5).rise(window, hist(20.0, 20)) is not None


def test_latency_rise_needs_the_factor() -> None:
    window, base = hist(100.0, 10), hist(20.0, 20)
    ratio = p95(100.0) / p95(20.0)
    assert LatencyRise(factor=ratio * (1 - 1e-9)).rise(window, base) is not None
    assert LatencyRise(factor=ratio * (1 + 1e-9)).rise(window, base) is None


def test_latency_rise_needs_min_abs_ms() -> None:
    window, base = hist(100.0, 10), hist(20.0, 20)
    diff = p95(100.0) - p95(20.0)
    assert LatencyRise(min_abs_ms=diff).rise(window, base) is not None
    assert LatencyRise(min_abs_ms=diff + 1e-9).rise(window, base) is None
    # The default 50 ms: 10 ms -> 50 ms is five times slower but only ~44 ms more.
    assert LatencyRise().rise(hist(50.0, 10), hist(10.0, 20)) is None


def test_latency_rise_short_baseline_needs_short_factor() -> None:
    window = hist(100.0, 10)  # about 5.7 x the baseline
    assert LatencyRise().rise(window, hist(20.0, 20)) is not None  # full baseline
    assert LatencyRise().rise(window, hist(20.0, 19)) is None  # short: needs 10 x
    assert LatencyRise().rise(window, hist(20.0, 5)) is None
    assert LatencyRise().rise(hist(250.0, 10), hist(20.0, 19)) == (p95(250.0), p95(20.0))


def test_latency_rise_without_a_baseline_is_nothing_by_default() -> None:
    # Fewer than short_baseline_samples: a service slow from its first request did not
    # become slow.
    assert LatencyRise().rise(hist(5000.0, 50), hist(20.0, 4)) is None
    assert LatencyRise().rise(hist(5000.0, 50), Hist()) is None


def test_latency_rise_without_a_baseline_counts_above_no_baseline_ms() -> None:
    window = hist(1000.0, 10)
    p_w = p95(1000.0)
    assert LatencyRise(no_baseline_ms=p_w).rise(window, hist(20.0, 4)) == (p_w, None)
    assert LatencyRise(no_baseline_ms=p_w + 1e-9).rise(window, hist(20.0, 4)) is None
    # Five baseline samples are a (short) baseline: then the baseline value is reported.
    assert LatencyRise(no_baseline_ms=p_w).rise(window, hist(20.0, 5)) == (p_w, p95(20.0))


def test_latency_rise_quantile_is_configurable() -> None:
    # 85 fast and 15 slow values: the p95 is slow, the median is not.
    window = hist(10.0, 85)
    window.merge(hist(500.0, 15))
    base = hist(10.0, 40)
    assert LatencyRise().rise(window, base) == (p95(500.0), p95(10.0))
    assert LatencyRise(quantile=0.5).rise(window, base) is None


def test_latency_rise_with_an_empty_weighted_histogram_is_none() -> None:
    # Values recorded with weight 0 are seen (samples) but count nothing: no quantile.
    assert LatencyRise().rise(hist(100.0, 10, weight=0), hist(20.0, 20)) is None
    assert LatencyRise().rise(hist(100.0, 10), hist(20.0, 20, weight=0)) is None


def test_latency_steady_at_a_high_level_is_not_a_rise() -> None:
    assert LatencyRise().rise(hist(800.0, 100), hist(800.0, 100)) is None


# -- LatencyRise.most_above: a few seconds of a quiet service ---------------------------------


def mix(*parts: tuple[float, int]) -> Hist:
    h = Hist()
    for ms, n in parts:
        h.merge(hist(ms, n))
    return h


MEDIAN = LatencyRise(quantile=0.5)


def test_three_of_five_visits_far_above_the_usual_are_a_rise() -> None:
    base = mix((5.0, 95), (15.0, 5))  # median 5 ms, p95 ~15 ms
    tail = base.quantile(0.95)
    window = mix((5.0, 2), (400.0, 3))
    assert MEDIAN.rise(window, base) is None  # too few for a median (min_samples 10)
    assert MEDIAN.most_above(window, base, tail) == (window.quantile(0.5), base.quantile(0.5))


def test_most_above_needs_three_slow_visits_and_more_than_half() -> None:
    base = mix((5.0, 95), (15.0, 5))
    tail = base.quantile(0.95)
    assert MEDIAN.most_above(mix((400.0, 2)), base, tail) is None  # two: a pause, not a fault
    assert MEDIAN.most_above(mix((5.0, 3), (400.0, 3)), base, tail) is None  # half, not most
    assert MEDIAN.most_above(mix((5.0, 2), (400.0, 3)), base, tail) is not None


def test_most_above_needs_the_factor_the_absolute_rise_and_the_tail() -> None:
    base = mix((5.0, 95), (15.0, 5))
    tail = base.quantile(0.95)
    # 40 ms: 8 x the median, but not 50 ms above it (min_abs_ms): a busy moment, not a page.
    assert MEDIAN.most_above(mix((40.0, 5)), base, tail) is None
    # 80 ms with a baseline whose p95 is 100 ms: in the usual tail, not past it.
    wide = mix((5.0, 90), (100.0, 10))
    assert MEDIAN.most_above(mix((80.0, 5)), wide, wide.quantile(0.95)) is None
    assert MEDIAN.most_above(mix((80.0, 5)), base, tail) is not None


def test_most_above_leaves_windows_with_enough_visits_to_the_median() -> None:
    base = mix((5.0, 95), (15.0, 5))
    assert MEDIAN.most_above(mix((400.0, 10)), base, None) is None
    assert MEDIAN.rise(mix((400.0, 10)), base) is not None


def test_most_above_against_a_short_baseline_needs_ten_times() -> None:
    short = hist(20.0, 8)  # 5 to 19 samples: a collector seconds old
    assert MEDIAN.most_above(mix((150.0, 5)), short, None) is None  # x7.5
    assert MEDIAN.most_above(mix((250.0, 5)), short, None) is not None  # x12.5
    assert MEDIAN.most_above(mix((2500.0, 5)), hist(20.0, 4), None) is None  # no baseline


def test_most_above_counts_visits_seen_not_weighted_count() -> None:
    base = mix((5.0, 95), (15.0, 5))
    window = hist(400.0, 2, weight=5)  # a count of 10, two visits seen
    assert MEDIAN.most_above(window, base, None) is None
    assert MEDIAN.most_above(hist(400.0, 3, weight=5), base, None) is not None
