"""Time travel: ``GET /api/graph?at=T`` shows the graph, the health and the incidents open at a
past moment. The simulated shop runs under an injected clock through the whole collector
(`wiring.build_service`) served over real HTTP: a payment fault that has since cleared is
visible at its time (failing, with its incident open and the team to page then) and not now;
the past answer equals what the live one said at that moment; out-of-range moments are refused
with the retained range; reading the past changes nothing; a restart with ``--data-dir`` keeps
the history within the retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from diagnosis_sim import Clock, Fault, Shop, serve

from collector import wiring
from collector.config import CollectorConfig, DiagnosisConfig
from collector.history import MAX_CHANGES, HealthLog, history_range, parse_at
from collector.service import CollectorService

T0 = 1_700_000_000.0  # a multiple of 10: see `_aligned`


def _service(clock: Clock, data_dir: Path | None = None) -> CollectorService:
    config = CollectorConfig(data_dir=data_dir, diagnosis=DiagnosisConfig(
        baseline_s=60.0, incident_quiet_s=10.0, evaluate_interval_s=3600))
    return wiring.build_service(config, clock)


def _drive(service: CollectorService, clock: Clock, shop: Shop, seconds: int,
           rps: int = 5) -> None:
    for _ in range(seconds):
        for i in range(rps):
            service.ingest(shop.request(clock.t + i / rps), now=clock.t)
        clock.t += 1.0
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()


def _get(url: str, path: str, **params: Any) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        return client.get(path, params=params)


def _health(graph: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n["health"] for n in graph["nodes"]}


def _edge(graph: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    return next(e for e in graph["edges"] if (e["source"], e["target"]) == (source, target))


class Scenario:
    """70 s healthy, 25 s of payment failing half its requests, then healthy until the
    incident resolves and well past the 2 min of 1 s buckets. ``live_then`` is what
    ``/api/graph`` answered at ``t_fault``, during the fault."""

    def __init__(self, url: str, service: CollectorService, clock: Clock) -> None:
        shop = Shop()
        _drive(service, clock, shop, 70)
        shop.faults = {"payment": Fault(error_rate=0.5)}
        _drive(service, clock, shop, 19)  # T0 + 89: its whole seconds align with 10 s buckets
        self.t_fault = clock.t
        self.live_then = _get(url, "/api/graph").json()
        self.incidents_then = _get(url, "/api/incidents", status="open").json()["incidents"]
        _drive(service, clock, shop, 6)
        shop.faults = {}
        _drive(service, clock, shop, 150)
        self.t_now = clock.t


@pytest.fixture(scope="module")
def shop_run() -> Any:
    clock = Clock(T0)
    service = _service(clock)
    with serve(service) as url:
        yield url, service, clock, Scenario(url, service, clock)


def test_a_cleared_fault_is_visible_at_its_time_and_not_now(shop_run: Any) -> None:
    url, _, _, run = shop_run
    assert _health(run.live_then)["payment"] == "failing"  # the fault was seen live
    now = _get(url, "/api/graph").json()
    assert _health(now)["payment"] == "healthy"
    assert _get(url, "/api/incidents", status="open").json()["incidents"] == []
    assert "at" not in now and "incidents" not in now  # a live answer is today's

    past = _get(url, "/api/graph", at=run.t_fault).json()
    assert past["at"] == run.t_fault and past["health_source"] == "log"
    # The health each node had then is what the evaluation concluded then...
    assert _health(past) == _health(run.live_then)
    assert _health(past)["payment"] == "failing"
    # ...over the same numbers (the window's buckets are 10 s ones by now, aligned with it;
    # the past read also counts the calls that arrived later in T's own 1 s bucket: 5 rps).
    for src, dst in (("checkout", "payment"), ("frontend", "checkout")):
        then, again = _edge(run.live_then, src, dst), _edge(past, src, dst)
        assert 0 <= again["calls"] - then["calls"] <= 5
        assert again["error_ratio"] == pytest.approx(then["error_ratio"], abs=0.05)
        assert again["rate_rps"] == pytest.approx(then["rate_rps"], rel=0.05)
    assert _edge(past, "checkout", "payment")["error_ratio"] > 0.1
    # The incident open then, with its root cause and who to page as they were then.
    (inc,) = past["incidents"]
    (then_inc,) = run.incidents_then
    assert inc["id"] == then_inc["id"] and inc["status"] == "open"
    assert inc["status_now"] == "resolved" and inc["resolved_at"] > run.t_fault
    assert inc["as_of"] == "at"
    assert inc["root_cause"]["service"] == "payment"
    assert inc["root_cause"]["kind"] == then_inc["root_cause"]["kind"]
    assert inc["page"] == then_inc["page"]
    assert all(h["at"] <= run.t_fault for h in inc["history"])
    assert "payment" in past["nodes"][[n["id"] for n in past["nodes"]].index("checkout")].get(
        "impacted_by", ["payment"])
    # An RFC 3339 time names the same moment.
    iso = datetime.fromtimestamp(run.t_fault, UTC).isoformat().replace("+00:00", "Z")
    assert _health(_get(url, "/api/graph", at=iso).json()) == _health(past)


def test_the_incidents_open_at_a_past_moment_are_listed_as_the_graph_lists_them(
        shop_run: Any) -> None:
    url, _, _, run = shop_run
    got = _get(url, "/api/incidents", at=run.t_fault).json()
    assert got["at"] == run.t_fault
    assert got["incidents"] == _get(url, "/api/graph", at=run.t_fault).json()["incidents"]
    (inc,) = got["incidents"]
    assert inc["root_cause"]["service"] == "payment" and inc["status"] == "open"
    assert inc["status_now"] == "resolved"
    assert _get(url, "/api/incidents", at=T0 + 65, status="open").json()["incidents"] == []
    for params, why in (({"at": run.t_now + 60}, "in the future"),
                        ({"at": run.t_fault, "status": "resolved"}, "leave status out"),
                        ({"at": "yesterday"}, "RFC 3339")):
        r = _get(url, "/api/incidents", **params)
        assert r.status_code == 400 and why in r.json()["error"], (params, r.text)


def test_before_the_fault_the_past_is_healthy_and_has_no_incident(shop_run: Any) -> None:
    url, _, _, run = shop_run
    before = _get(url, "/api/graph", at=T0 + 65).json()
    assert before["incidents"] == []
    assert _health(before)["payment"] == "healthy"
    assert _edge(before, "checkout", "payment")["errors"] == 0


def test_the_history_range_bounds_at(shop_run: Any) -> None:
    url, _, _, run = shop_run
    rng = _get(url, "/api/history").json()
    assert rng["history"]["to"] == run.t_now
    assert rng["history"]["from"] == T0
    assert rng["retention_s"] == 900.0
    assert rng["health_log"]["elements"] > 0 and rng["health_log"]["approx_bytes"] > 0
    for at, words in ((run.t_now + 5, "in the future"), (T0 - 100, "older than the retained"),
                      ("yesterday", "RFC 3339"), ("2023-11-14T22:13:20", "no UTC offset")):
        resp = _get(url, "/api/graph", at=at)
        assert resp.status_code == 400
        assert words in resp.json()["error"], resp.json()
    out = _get(url, "/api/graph", at=T0 - 100).json()
    assert out["history"]["from"] == T0 and out["history"]["to"] == run.t_now
    assert "between" in out["error"]


def test_a_young_collector_shows_any_moment_since_it_began_whatever_the_window() -> None:
    # Nothing has been dropped yet: a window as long as the retention (the dashboard's
    # --window-s 900) may look back to the start, as a shorter one may.
    for window in (60.0, 900.0):
        rng = history_range(now=T0 + 70, started_at=T0, retention_s=900.0, window_s=window)
        assert (rng.start, rng.earliest_at, rng.end) == (T0, T0, T0 + 70)
    # Older than the retention: the window must still be wholly retained.
    old = history_range(now=T0 + 1000, started_at=T0, retention_s=900.0, window_s=60.0)
    assert (old.start, old.earliest_at) == (T0 + 100, T0 + 160)
    whole = history_range(now=T0 + 1000, started_at=T0, retention_s=900.0, window_s=900.0)
    assert whole.earliest_at == T0 + 1000


def test_a_short_window_in_the_10s_buckets_is_widened_and_says_so(shop_run: Any) -> None:
    url, _, _, run = shop_run
    old = _get(url, "/api/graph", at=run.t_fault, window=15).json()
    assert old["window_s"] == 20.0 and old["window_requested_s"] == 15.0
    assert old["health_source"] == "judged"  # not the default window: judged from numbers
    assert _health(old)["payment"] == "failing"
    recent = _get(url, "/api/graph", at=run.t_now - 30, window=15).json()
    assert recent["window_s"] == 15.0 and "window_requested_s" not in recent


def test_reading_the_past_changes_no_state(shop_run: Any) -> None:
    url, service, _, run = shop_run
    diag = service.parts["diagnosis"]

    def state() -> Any:
        g = service.parts["graph"]
        return (diag.manager.incidents_json(), diag.latest, diag.log.stats(),
                _get(url, "/api/graph").content, g.export_counters(), len(g.kinds),
                diag.counters())

    before = state()
    errors: list[str] = []

    def reader(i: int) -> None:
        for k in range(10):
            resp = _get(url, "/api/graph", at=T0 + 60 + 13 * i + k, window=60 + k)
            if resp.status_code != 200:
                errors.append(resp.text)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert state() == before


def test_history_survives_a_restart_with_a_data_dir(tmp_path: Path) -> None:
    clock = Clock(T0)
    service = _service(clock, tmp_path)
    shop = Shop()
    _drive(service, clock, shop, 70)
    shop.faults = {"payment": Fault(error_rate=0.5)}
    _drive(service, clock, shop, 19)
    t_fault = clock.t
    shop.faults = {}
    _drive(service, clock, shop, 40)
    service.parts["checkpoint"].save(clock.t)
    service.parts["checkpoint"].close()
    service.parts["diagnosis"].manager.store.close()

    clock.t += 30  # down for 30 s
    again = _service(clock, tmp_path)
    try:
        with serve(again) as url:
            past = _get(url, "/api/graph", at=t_fault).json()
    finally:
        again.parts["checkpoint"].close()
        again.parts["diagnosis"].manager.store.close()
    # The log was in memory: health is judged from the restored buckets, and the incident
    # comes from the incident store with its latest root cause.
    assert past["health_source"] == "judged"
    assert _health(past)["payment"] == "failing"
    assert _edge(past, "checkout", "payment")["error_ratio"] > 0.1
    (inc,) = past["incidents"]
    assert inc["root_cause"]["service"] == "payment" and inc["as_of"] == "latest"


# -- the log itself ---------------------------------------------------------------------------

def test_the_log_keeps_changes_only_within_the_retention() -> None:
    log = HealthLog(retention_s=100.0)
    for t in range(0, 241):
        state = "failing" if 150 <= t < 160 else "healthy"
        nodes = {"a": state, **({"b": "healthy"} if t < 120 else {})}
        log.record(float(t), nodes, {("a", "b"): "healthy"} if t < 120 else {}, ())
    # a: healthy (since 0, in force at the horizon, 140), failing at 150, healthy at 160;
    # b and the edge left the graph at 120, before the horizon: forgotten.
    stats = log.stats()
    assert stats["elements"] == 1 and stats["changes"] == 3
    past = log.health_at(155.0)
    assert past is not None and past.nodes == {"a": "failing"} and past.edges == {}
    for t, state in ((141.0, "healthy"), (150.0, "failing"), (160.0, "healthy")):
        got = log.health_at(t)
        assert got is not None and got.nodes == {"a": state}, t
    assert log.health_at(139.0) is None  # before the retention's horizon: not known


def test_a_flapping_element_is_capped() -> None:
    log = HealthLog(retention_s=1e9)
    for t in range(3 * MAX_CHANGES):
        log.record(float(t), {"a": "failing" if t % 2 else "healthy"}, {}, ())
    assert log.stats()["changes"] == MAX_CHANGES
    past = log.health_at(0.0)
    assert past is not None and past.nodes == {}  # its oldest transitions were dropped


def test_incidents_are_logged_when_they_change() -> None:
    log = HealthLog(retention_s=1e9)
    inc = {"id": "i1", "started_at": 10.0, "confidence": 0.9,
           "root_cause": {"service": "payment", "team": "payments", "kind": "errors",
                          "evidence": {"summary": "payment errors", "trace_ids": ["x"]}},
           "impacted": [{"service": "checkout", "team": "orders", "share": 1.0}],
           "page": {"team": "payments"}}
    log.record(5.0, {}, {}, ())
    for t in range(10, 20):
        log.record(float(t), {}, {}, (dict(inc, confidence=0.9 + t / 1000),))
    log.record(20.0, {}, {}, (dict(inc, root_cause=dict(inc["root_cause"], kind="down")),))
    log.record(30.0, {}, {}, ())
    assert log.stats()["incident_changes"] == 4
    assert log.incidents_at(7.0) == {}
    seen = log.incidents_at(15.0)
    assert seen is not None and seen["i1"]["root_cause"]["kind"] == "errors"
    assert "trace_ids" not in seen["i1"]["root_cause"]["evidence"]
    assert log.incidents_at(25.0)["i1"]["root_cause"]["kind"] == "down"  # type: ignore[index]
    assert log.incidents_at(31.0) == {}
    assert log.incidents_at(4.0) is None


def test_parse_at() -> None:
    assert parse_at("1700000000.5") == 1_700_000_000.5
    assert parse_at("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_at("2023-11-14T23:13:20+01:00") == 1_700_000_000.0
    for bad in ("nan", "inf", "soon", "2023-11-14T22:13:20"):
        with pytest.raises(ValueError):
            parse_at(bad)


def _campaign(readers: int) -> tuple[list[Any], dict[str, Any], list[int]]:
    """The fault campaign, with ``readers`` threads reading the past meanwhile."""
    clock = Clock(T0)
    service = _service(clock)
    done = [0] * readers
    with serve(service) as url:
        stop = threading.Event()

        def read(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
                while not stop.is_set():
                    at = max(T0, clock.t - 5 - i)
                    resp = client.get("/api/graph", params={"at": at})
                    assert resp.status_code == 200, resp.text
                    done[i] += 1

        threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
        for t in threads:
            t.start()
        try:
            shop = Shop()
            _drive(service, clock, shop, 70)
            shop.faults = {"payment": Fault(error_rate=0.5)}
            _drive(service, clock, shop, 20)
            shop.faults = {}
            _drive(service, clock, shop, 40)
        finally:
            stop.set()
            for t in threads:
                t.join()
    diag = service.parts["diagnosis"]
    history = [(i.root_cause["service"], i.started_at, i.status, i.resolved_at,
                [(h["at"], h["event"], h["summary"]) for h in i.history])
               for i in diag.manager.incidents()]
    return history, diag.log.stats(), done


def test_readers_of_the_past_change_no_conclusion() -> None:
    quiet, quiet_log, _ = _campaign(0)
    busy, busy_log, reads = _campaign(3)
    assert [h[0] for h in quiet] == ["payment"]
    assert min(reads) >= 1, reads
    assert busy == quiet and busy_log == quiet_log
