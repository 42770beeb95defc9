"""Health states from hand-built snapshots: thresholds, down/unknown, and hysteresis."""

from __future__ import annotations

from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.health import HealthJudge
from collector.model import Edge, Node, Snapshot

WINDOW = 60.0


def snap(t: float, ratio: float, calls: int = 1000, up: bool | None = None,
         window: float = WINDOW, client_only: int = 0) -> Snapshot:
    s = Snapshot(window_s=window, generated_at=t)
    s.nodes["web"] = Node("web", "service", error_ratio=0.0, meta={"calls": 500, "errors": 0})
    s.nodes["api"] = Node("api", "service", error_ratio=ratio,
                          meta={"calls": calls, "errors": int(ratio * calls), "up": up})
    s.edges[("web", "api")] = Edge("web", "api", error_ratio=ratio, meta={
        "calls": calls + client_only, "errors": int(ratio * calls) + client_only,
        "client_only_errors": client_only})
    return s


def health_series(appender: HealthJudge, ratios: list[float], t0: float = 0.0,
                  step: float = 1.0) -> list[str]:
    out = []
    for i, r in enumerate(ratios):
        s = snap(t0 + i * step, r)
        appender.judge(s, stateful=True)
        out.append(s.nodes["api"].health)
    return out


def test_thresholds() -> None:
    app = HealthJudge(TraceDiagnosis())
    assert health_series(app, [0.0]) == ["healthy"]
    fresh = HealthJudge(TraceDiagnosis())
    assert health_series(fresh, [0.01]) == ["degraded"]
    fresh = HealthJudge(TraceDiagnosis())
    assert health_series(fresh, [0.2]) == ["failing"]


def test_no_flapping_around_the_failing_threshold() -> None:
    app = HealthJudge(TraceDiagnosis())
    states = health_series(app, [0.101, 0.099, 0.102, 0.098, 0.097, 0.103, 0.099])
    assert states == ["failing"] * 7


def test_recovery_needs_the_exit_threshold_for_several_evaluations() -> None:
    app = HealthJudge(TraceDiagnosis())
    states = health_series(app, [0.2, 0.03, 0.03, 0.03, 0.0, 0.0, 0.0, 0.0])
    # Below 5 % for three evaluations leaves failing; 3 % still holds degraded; then healthy.
    assert states == ["failing", "failing", "failing", "degraded", "degraded", "degraded",
                      "healthy", "healthy"]


def test_recovery_takes_as_long_at_a_faster_tick() -> None:
    # Recovery is timed in seconds (2 s below the exit threshold), not counted in ticks: at
    # a 0.25 s tick a node leaves failing after 2 s as at 1 s, not after 0.5 s.
    app = HealthJudge(TraceDiagnosis())
    states = health_series(app, [0.2] + [0.03] * 12, step=0.25)
    assert states[:9] == ["failing"] * 9  # below since 0.25 s: 2 s later is the 9th tick
    assert states[9:] == ["degraded"] * 4


def test_a_spike_back_up_resets_recovery() -> None:
    app = HealthJudge(TraceDiagnosis())
    states = health_series(app, [0.2, 0.0, 0.0, 0.07, 0.0, 0.0, 0.0])
    assert states[:6] == ["failing"] * 6
    assert states[6] == "healthy"


def test_other_windows_are_judged_without_state() -> None:
    app = HealthJudge(TraceDiagnosis())
    health_series(app, [0.2])
    s = snap(1.0, 0.0, window=300.0)
    app.judge(s)
    assert s.nodes["api"].health == "healthy"
    assert health_series(app, [0.0], t0=2.0) == ["failing"]  # default window state kept


def test_down_when_scrape_fails_and_callers_get_no_answer() -> None:
    app = HealthJudge(TraceDiagnosis())
    s = snap(0.0, 0.0, calls=0, up=False, client_only=40)
    app.judge(s)
    assert s.nodes["api"].health == "down"
    assert s.edges[("web", "api")].health == "down"


def test_down_without_scrape_when_every_call_gets_no_answer() -> None:
    app = HealthJudge(TraceDiagnosis())
    s = snap(0.0, 0.0, calls=0, client_only=40)
    app.judge(s)
    assert s.nodes["api"].health == "down"


def test_unknown_without_data_and_healthy_when_only_the_scrape_answers() -> None:
    app = HealthJudge(TraceDiagnosis())
    s = snap(0.0, 0.0, calls=0)
    s.edges.clear()
    app.judge(s)
    assert s.nodes["api"].health == "unknown"
    s = snap(1.0, 0.0, calls=0, up=True)
    s.edges.clear()
    app.judge(s)
    assert s.nodes["api"].health == "healthy"
