from __future__ import annotations

import random

import pytest

from collector import sketch
from collector.stats import FINE_BUCKETS, RollingStats, VersionLog


def exact_quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[int(q * (len(s) - 1))]


def bins_of(values: list[float]) -> sketch.Bins:
    bins: sketch.Bins = {}
    for v in values:
        sketch.add(bins, v)
    return bins


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal"])
def test_quantiles_within_five_percent_of_exact(dist: str) -> None:
    rng = random.Random(7)
    if dist == "lognormal":
        values = [rng.lognormvariate(3, 1) for _ in range(20_000)]
    elif dist == "uniform":
        values = [rng.uniform(0.5, 2000) for _ in range(20_000)]
    else:
        values = [rng.gauss(5, 0.5) if rng.random() < 0.9 else rng.gauss(800, 50)
                  for _ in range(20_000)]
        values = [max(v, 0.01) for v in values]
    stats = RollingStats(1.0, 900.0, started_at=0.0)
    for i, v in enumerate(values):
        stats.record("svc", 1000.0 + i * 0.001, v, False)
    s = stats.summary("svc", 1030.0, 60.0)
    assert s.calls == len(values)
    for q, got in ((0.5, s.p50_ms), (0.95, s.p95_ms), (0.99, s.p99_ms)):
        want = exact_quantile(values, q)
        assert got is not None
        assert abs(got - want) / want <= 0.05, (q, got, want)


def test_sketches_merge_like_one_sketch() -> None:
    rng = random.Random(3)
    a_vals = [rng.expovariate(0.01) for _ in range(5000)]
    b_vals = [rng.expovariate(0.1) for _ in range(5000)]
    a, b = bins_of(a_vals), bins_of(b_vals)
    sketch.merge_into(a, b)
    assert sum(a.values()) == 10_000
    assert sketch.quantiles(a, (0.9,)) == sketch.quantiles(bins_of(a_vals + b_vals), (0.9,))
    want = exact_quantile(a_vals + b_vals, 0.9)
    (got,) = sketch.quantiles(a, (0.9,))
    assert got is not None and abs(got - want) / want <= 0.05


def test_zero_durations_and_empty_sketch() -> None:
    assert sketch.quantiles(bins_of([0.0, 0.0, 0.0, 10.0]), (0.5,)) == [0.0]
    assert sketch.quantiles({}, (0.5,)) == [None]


def test_window_counts_only_its_buckets_and_rate_is_per_second() -> None:
    stats = RollingStats(1.0, 900.0, started_at=0.0)
    for t in range(1000, 1100):  # 10 calls/s for 100 s, one error per second
        for k in range(10):
            stats.record("a", t + k / 10, 5.0, k == 0)
    s10 = stats.summary("a", 1099.5, 10.0)
    assert s10.calls == 100
    assert s10.rate_rps == pytest.approx(10.0)
    assert s10.error_ratio == pytest.approx(0.1)
    assert stats.summary("a", 1099.5, 60.0).calls == 600
    # Long after the traffic stopped the window is empty.
    assert stats.summary("a", 1500.0, 60.0).calls == 0


def test_old_buckets_are_merged_then_dropped_so_memory_stays_bounded() -> None:
    stats = RollingStats(1.0, 300.0, started_at=0.0)
    for t in range(0, 2000):
        stats.record("a", float(t), 1.0, False)
    series = stats._series["a"]
    assert len(series.fine) <= FINE_BUCKETS
    assert len(series.coarse) <= 300 // 10 + 2
    # The whole retention is still readable, at coarse resolution for its older part.
    s = stats.summary("a", 1999.5, 300.0)
    assert 290 <= s.calls <= 310
    # Late data beyond the retention is refused and counted.
    stats.record("a", 10.0, 1.0, False)
    assert stats.late_dropped == 1


def test_rate_divides_by_time_observed_when_younger_than_window() -> None:
    stats = RollingStats(1.0, 900.0, started_at=1000.0)
    for k in range(50):
        stats.record("a", 1004.0 + k / 100, 1.0, False)
    assert stats.summary("a", 1010.0, 60.0).rate_rps == pytest.approx(5.0)


def test_series_has_at_most_about_120_points_and_sums_to_the_window() -> None:
    stats = RollingStats(1.0, 900.0, started_at=0.0)
    for t in range(100, 1000):
        stats.record("a", t + 0.5, 2.0, t % 2 == 0)
    for window in (30.0, 300.0, 900.0):
        points = stats.series("a", 999.9, window)
        assert len(points) <= 121
        width = points[1].t - points[0].t
        total = sum(p.rate_rps * width for p in points)
        assert total == pytest.approx(stats.summary("a", 999.9, window).calls, rel=0.05)
        assert all(p.p95_ms is None or p.p95_ms == pytest.approx(2.0, rel=0.02) for p in points)


def test_prune_forgets_idle_keys() -> None:
    stats = RollingStats(1.0, 60.0, started_at=0.0)
    stats.record("old", 10.0, 1.0, False)
    stats.record("new", 100.0, 1.0, False)
    assert stats.prune(100.0) == 1
    assert "old" not in stats and "new" in stats


def test_versions_first_and_last_seen_bounded() -> None:
    log = VersionLog(max_per_service=2)
    log.record("cart", "1.0", 10.0)
    log.record("cart", "1.0", 20.0)
    log.record("cart", "1.1", 30.0)
    assert [(v.version, v.first_seen, v.last_seen) for v in log.versions("cart")] == [
        ("1.0", 10.0, 20.0),
        ("1.1", 30.0, 30.0),
    ]
    log.record("cart", "1.2", 40.0)
    assert [v.version for v in log.versions("cart")] == ["1.1", "1.2"]
    assert log.dropped == 1


def test_version_change_nearest_the_time_within_the_horizon() -> None:
    log = VersionLog()
    log.record("cart", "1.0", 100.0)
    assert log.change_near("cart", 150.0) is None  # one version: no change
    log.record("cart", "1.1", 200.0)
    log.record("cart", "1.2", 5_000.0)
    assert log.change_near("cart", 250.0) == {"service": "cart", "from": "1.0", "to": "1.1",
                                              "at": 200.0}
    assert log.change_near("cart", 4_900.0)["to"] == "1.2"  # type: ignore[index]
    assert log.change_near("cart", 250.0, horizon_s=10.0) is None
    assert log.change_near("checkout", 250.0) is None
