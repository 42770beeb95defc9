"""Time travel beyond the retention: with ``--data-dir`` each minute of the graph is archived
(``collector.archive``), and ``GET /api/graph?at=T`` older than the retained statistics is
answered from the minute nearest T. The simulated shop runs under an injected clock through
the whole collector (`wiring.build_service`, a 2 min retention) served over real HTTP, the
archive written each simulated second as its background loop does: a payment fault long
past the retention is shown at its time, with its health and its incident; a gap is refused
naming the minutes around it; the file stays within its bound, survives a restart, and a
write SQLite refuses is counted and shown on ``/healthz`` until one works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from diagnosis_sim import Clock, Fault, Shop, serve
from test_time_travel import _edge, _get, _health

from collector import archive as archive_mod
from collector import wiring
from collector.archive import GraphArchive, archive_taker
from collector.config import CheckpointConfig, CollectorConfig, DiagnosisConfig
from collector.service import CollectorService

T0 = 1_699_999_980.0  # a whole minute (a multiple of 60)
RETENTION_S = 120.0


def _service(clock: Clock, data_dir: Path, **checkpoint: Any) -> CollectorService:
    config = CollectorConfig(data_dir=data_dir, retention_s=RETENTION_S,
                             default_window_s=60.0,
                             checkpoint=CheckpointConfig(**checkpoint),
                             diagnosis=DiagnosisConfig(baseline_s=60.0, incident_quiet_s=10.0,
                                                       evaluate_interval_s=3600))
    return wiring.build_service(config, clock)


def _drive(service: CollectorService, clock: Clock, shop: Shop, seconds: int,
           archive: bool = True) -> None:
    """5 requests a simulated second, the collector's tick and evaluation, and the archive's
    loop (``archive_due`` each second, as ``writer_loop`` does)."""
    arch: GraphArchive = service.parts["archive"]
    take = archive_taker(service)
    for _ in range(seconds):
        for i in range(5):
            service.ingest(shop.request(clock.t + i / 5), now=clock.t)
        clock.t += 1.0
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()
        if archive:
            arch.archive_due(clock.t, take)


def _close(service: CollectorService) -> None:
    """Close the data-dir files (again, if a served app's shutdown did already)."""
    service.parts["checkpoint"].close()
    service.parts["diagnosis"].manager.store.close()
    if "archive" in service.parts:
        service.parts["archive"].close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """70 s healthy, 40 s of payment failing half its requests, 6 min healthy (with 3 minutes
    in the middle not archived: a gap), so the fault is far beyond the 2 min retention."""
    data = tmp_path_factory.mktemp("data")
    clock = Clock(T0)
    service = _service(clock, data)
    shop = Shop()
    _drive(service, clock, shop, 70)
    shop.faults = {"payment": Fault(error_rate=0.5)}
    _drive(service, clock, shop, 40)
    t_fault = T0 + 105  # 35 s into the fault: the minute ending at T0 + 120 holds it
    shop.faults = {}
    _drive(service, clock, shop, 90)
    gap_from = clock.t
    _drive(service, clock, shop, 180, archive=False)
    gap_to = clock.t
    _drive(service, clock, shop, 150)
    with serve(service) as url:
        yield url, service, clock, data, t_fault, (gap_from, gap_to)
    _close(service)


def test_a_fault_beyond_the_retention_is_shown_from_the_archive(run: Any) -> None:
    url, service, clock, _, t_fault, _ = run
    assert clock.t - t_fault > RETENTION_S + 300
    past = _get(url, "/api/graph", at=t_fault).json()
    assert past["archived"] == {"at": T0 + 120, "window_s": 60.0}
    assert past["at"] == T0 + 120 and past["window_s"] == 60.0
    assert "window_requested_s" not in past  # the default window is a minute
    assert _health(past)["payment"] == "failing"
    assert _edge(past, "checkout", "payment")["error_ratio"] > 0.2
    (inc,) = past["incidents"]
    assert inc["root_cause"]["service"] == "payment" and inc["status"] == "open"
    # What became of it is today's: resolved since (the archived minute said "open").
    assert inc["status_now"] == "resolved" and inc["resolved_at"] < clock.t
    # The minute before the fault: healthy, no incident.
    before = _get(url, "/api/graph", at=T0 + 60).json()
    assert before["archived"]["at"] == T0 + 60
    assert _health(before)["payment"] == "healthy" and before["incidents"] == []
    assert _edge(before, "checkout", "payment")["errors"] == 0
    # A window other than the minute is said.
    short = _get(url, "/api/graph", at=t_fault, window=30).json()
    assert short["window_requested_s"] == 30 and short["window_s"] == 60.0
    # Live and recent moments still come from the retained statistics.
    recent = _get(url, "/api/graph", at=clock.t - 30).json()
    assert "archived" not in recent and recent["health_source"] == "log"


def test_the_history_range_reaches_the_oldest_archived_minute(run: Any) -> None:
    url, service, clock, _, _, _ = run
    h = _get(url, "/api/history").json()["history"]
    assert h["earliest_at"] == T0  # the first minute archived ended at T0 + 60
    assert h["archived_until"] == pytest.approx(clock.t - RETENTION_S + 60.0)
    stats = _get(url, "/api/history").json()["archive"]
    assert stats["minutes"] == service.parts["archive"].written and stats["oldest_end"] == T0 + 60
    too_old = _get(url, "/api/graph", at=T0 - 1)
    assert too_old.status_code == 400 and "older than the retained history" in \
        too_old.json()["error"]


def test_a_gap_in_the_archive_is_refused_naming_the_minutes_around_it(run: Any) -> None:
    url, service, _, _, _, (gap_from, gap_to) = run
    r = _get(url, "/api/graph", at=(gap_from + gap_to) / 2)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "no archived minute ends within 60 s" in err
    before, after = service.parts["archive"].nearest((gap_from + gap_to) / 2)
    assert before is not None and after is not None and after - before > 120
    assert f"the minute ending {before:.0f}" in err and f"the one ending {after:.0f}" in err


def test_reading_the_archive_changes_nothing_and_metrics_say_what_it_holds(run: Any) -> None:
    url, service, *_ = run
    arch: GraphArchive = service.parts["archive"]
    held = (arch.span(), arch.written, arch.pruned)
    for _ in range(3):
        _get(url, "/api/graph", at=T0 + 100)
    assert (arch.span(), arch.written, arch.pruned) == held
    text = _get(url, "/metrics").text
    minutes = [line for line in text.splitlines() if line.startswith("conway_archive_minutes ")]
    assert minutes == [f"conway_archive_minutes {float(arch.written)}"]
    assert "conway_archive_pruned_minutes_total 0.0" in text


def test_the_archive_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock(T0)
    service = _service(clock, tmp_path)
    shop = Shop()
    _drive(service, clock, shop, 70)
    shop.faults = {"payment": Fault(error_rate=0.5)}
    _drive(service, clock, shop, 60)
    _close(service)
    clock.t += 600  # down for 10 minutes: everything retained in memory is gone
    again = _service(clock, tmp_path)
    try:
        with serve(again) as url:
            past = _get(url, "/api/graph", at=T0 + 120).json()
    finally:
        _close(again)
    assert past["archived"]["at"] == T0 + 120
    assert _health(past)["payment"] == "failing"


def test_the_oldest_minutes_go_past_the_size_bound_and_are_counted(tmp_path: Path) -> None:
    arch = GraphArchive(tmp_path / archive_mod.DB_NAME, max_bytes=3_000)
    body = {"nodes": [{"id": f"{i:x}" * 20} for i in range(200)]}  # ~1 kB compressed
    sizes = []
    for k in range(10):
        assert arch.record(T0 + 60 * k, {**body, "k": k})
        sizes.append(arch._bytes)
    assert max(sizes) <= 3_000 and arch._rows >= 2
    span = arch.span()
    assert span is not None and span[1] == T0 + 60 * (10 - arch._rows)  # the oldest kept
    assert arch.pruned == 10 - arch._rows
    assert arch.read(T0) is None  # pruned
    got = arch.read(T0 + 540)
    assert got is not None and got[1]["k"] == 9
    arch.close()


def test_minutes_older_than_the_age_bound_go(tmp_path: Path) -> None:
    arch = GraphArchive(tmp_path / archive_mod.DB_NAME, keep_s=300)
    for k in range(10):
        arch.record(T0 + 60 * k, {"k": k})
    assert arch.span() == (T0 + 60 * 4 - 60, T0 + 60 * 4) and arch.pruned == 4
    assert arch.read(T0 + 540) is not None
    arch.close()


def test_a_write_sqlite_refuses_is_counted_shown_and_retried(tmp_path: Path) -> None:
    clock = Clock(T0)
    service = _service(clock, tmp_path)
    arch: GraphArchive = service.parts["archive"]
    shop = Shop()
    try:
        _drive(service, clock, shop, 64)  # the first minute is taken 3 s after it ends
        assert arch.written == 1
        # SQLite refuses the next minute's write (``query_only``: as a read-only or full
        # file would, with its own error).
        arch._db.execute("PRAGMA query_only = 1")
        _drive(service, clock, shop, 60)
        # Tried once when due (T0 + 123), then every 10 s: one failure so far.
        assert arch.written == 1 and arch.writes.write_errors == 1
        problems = service.parts["state_files"].problems()
        assert [Path(p["file"]).name for p in problems] == [archive_mod.DB_NAME]
        assert "readonly" in problems[0]["error"]
        with serve(service) as url:  # (its shutdown closes the files)
            health = _get(url, "/healthz").json()
            assert health["status"] == "degraded", health
            # Writable again: at the retry the minute taken then is written (not taken
            # again: its past read holds the lock), and the error cleared.
            arch._db.execute("PRAGMA query_only = 0")
            _drive(service, clock, shop, 10)
            assert arch.written == 2 and arch.writes.write_error is None
            assert arch.read(T0 + 120) is not None
            assert service.parts["state_files"].problems() == []
            assert _get(url, "/healthz").json() == {"status": "ok"}
    finally:
        _close(service)


def test_no_archive_without_a_data_dir_or_with_size_zero(tmp_path: Path) -> None:
    clock = Clock(T0)
    off = _service(clock, tmp_path, archive_max_mb=0)
    try:
        assert "archive" not in off.parts
        assert not (tmp_path / archive_mod.DB_NAME).exists()
    finally:
        _close(off)
    with pytest.raises(ValueError, match="archive_max_mb"):
        CheckpointConfig(archive_max_mb=-1)


def test_a_damaged_archive_refuses_to_open_naming_it(tmp_path: Path) -> None:
    path = tmp_path / archive_mod.DB_NAME
    path.write_text("not an archive\n" * 100)
    from collector.checkpoint import CheckpointError

    with pytest.raises(CheckpointError) as exc:
        GraphArchive(path)
    assert exc.value.path == path and "--reset-state" in str(exc.value)
