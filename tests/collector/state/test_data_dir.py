"""The data dir under stress, with real collector processes: a full disk (a 2 MB tmpfs) never
stops the incident lifecycle and the file catches up once there is room; damaged or unusable
files stop start-up with one line naming the file (exit 2) unless ``--reset-state`` moves them
aside; single bad rows are skipped and counted; two collectors never share a data dir."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_collector import REPO, Collector, metric, sdk_provider
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from procs import free_port

from collector import archive, checkpoint
from collector.diagnosis import incidents as inc_mod

INCIDENTS = inc_mod.DB_NAME
STATE = checkpoint.DB_NAME
ARCHIVE = archive.DB_NAME
FAST = ("--diagnosis", "trace_quiet_s=0.5")
WAIT_S = 60.0


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (skips the test when that is not possible), always
    unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip() or r.returncode}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)])


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def failing_calls_until(url: str, done: Callable[[], Any], prefix: str) -> Any:
    """SDK calls ``{prefix}-front -> {prefix}-pay`` that fail at ``{prefix}-pay`` (an origin
    error: the fault diagnosis opens an incident for) until ``done()`` says something."""
    front, pay = sdk_provider(url, f"{prefix}-front"), sdk_provider(url, f"{prefix}-pay")
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for _ in range(5):
                with front.get_tracer("t").start_as_current_span(
                        "POST /pay", kind=SpanKind.CLIENT) as call:
                    with pay.get_tracer("t").start_as_current_span(
                            "POST /pay", context=trace.set_span_in_context(call),
                            kind=SpanKind.SERVER) as server:
                        server.set_status(Status(StatusCode.ERROR, "card processor down"))
                    call.set_status(Status(StatusCode.ERROR))
            got = done()
            if got:
                return got
        raise AssertionError("no incident opened")
    finally:
        front.shutdown()
        pay.shutdown()


def open_incidents(url: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/api/incidents", params={"status": "open"}, timeout=10)
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["incidents"]
    return listed


def healthz(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/healthz", timeout=10)
    assert r.status_code == 200, r.text  # degraded still answers 200 (see readapi.ReadApi.healthz)
    body: dict[str, Any] = r.json()
    return body


def fill(path: Path) -> None:
    """Write ``path`` until its file system is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:  # the last partial block
            while True:
                f.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def run_collector(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "--port", str(free_port()), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


# -- a full disk ----------------------------------------------------------------------------

def test_a_full_disk_degrades_health_and_the_incidents_file_catches_up(tmp_path: Path) -> None:
    log = tmp_path / "collector.log"  # outside the tmpfs
    with tmpfs(tmp_path / "data", "size=2m") as data:
        c = Collector("--data-dir", str(data), *FAST, log=log)
        try:
            assert healthz(c.url) == {"status": "ok"}
            fill(data / "filler")
            # The incident opens in memory while nothing can be written.
            (inc,) = failing_calls_until(c.url, lambda: open_incidents(c.url), "full")
            assert inc["root_cause"]["service"] == "full-pay"

            def degraded() -> dict[str, str] | None:
                body = healthz(c.url)
                by_file = {Path(p["file"]).name: p["error"]
                           for p in body.get("state_write_errors", [])}
                return by_file if body["status"] == "degraded" and INCIDENTS in by_file \
                    else None

            problems = wait_until("/healthz to say the incidents file cannot be written",
                                  degraded)
            assert "database or disk is full" in problems[INCIDENTS]
            # Retried every evaluation while the disk is full, each failure counted.
            wait_until("retries", lambda: metric(c.url, "conway_state_write_errors_total",
                                                 file=INCIDENTS) >= 3)
            # The checkpoint (its own interval, not the evaluation's) fails and is counted too.
            wait_until("a failed checkpoint", lambda: metric(
                c.url, "conway_state_write_errors_total", file=STATE) >= 1)
            # The lifecycle goes on: the same incident, still open, updated in memory.
            assert [i["id"] for i in open_incidents(c.url)] == [inc["id"]]

            (data / "filler").unlink()
            wait_until("/healthz back to ok", lambda: healthz(c.url) == {"status": "ok"})

            def stored_ids() -> set[str]:
                db = sqlite3.connect(f"file:{data / INCIDENTS}?mode=ro", uri=True)
                try:
                    return {r[0] for r in db.execute("SELECT id FROM incidents")}
                finally:
                    db.close()

            assert inc["id"] in stored_ids()  # written once there was room again
            # Still working: a later write lands too (the lifecycle was never stopped).
            assert [i["id"] for i in open_incidents(c.url)] == [inc["id"]]
        finally:
            c.stop()
        assert c.proc.returncode == 0
        # And a restart on the same dir shows the incident.
        again = Collector("--data-dir", str(data), *FAST, log=log)
        try:
            assert inc["id"] in {i["id"] for i in open_incidents(again.url)}
        finally:
            again.stop()
    text = log.read_text()
    # Logged once for the episode, with SQLite's real error, and the recovery said so.
    assert text.count(f"cannot write incidents to {data / INCIDENTS}: database or disk is "
                      f"full") == 1, text
    assert f"incidents written to {data / INCIDENTS} again" in text
    # The checkpoints failed too: their log names the real error, never the rollback's.
    assert f"checkpoint to {data / STATE} failed: database or disk is full" in text, text
    assert "cannot rollback" not in text, text
    assert "Traceback" not in text, text


# -- damaged or unusable files ---------------------------------------------------------------

def _valid_incidents_file(path: Path, n: int = 60) -> None:
    db = sqlite3.connect(path)
    db.executescript(inc_mod._SCHEMA)
    for k in range(n):
        db.execute("INSERT INTO incidents VALUES (?,?,?,?,?,?,?,?,?)",
                   (f"id{k}", "svc", "errors", "resolved", 1.0 + k, 2.0 + k, 3.0 + k, 2.0 + k,
                    json.dumps({"root_cause": {"service": "svc", "kind": "errors"},
                                "impacted": [], "page": {}, "confidence": 0.9,
                                "padding": "x" * 800})))
    db.commit()
    db.close()


def _text(d: Path) -> Path:
    (d / INCIDENTS).write_text("this is not an SQLite file\n" * 100)
    return d / INCIDENTS


def _truncated(d: Path) -> Path:
    _valid_incidents_file(d / INCIDENTS)
    os.truncate(d / INCIDENTS, (d / INCIDENTS).stat().st_size // 2)
    return d / INCIDENTS


def _directory(d: Path) -> Path:
    (d / INCIDENTS).mkdir()
    return d / INCIDENTS


def _state_text(d: Path) -> Path:
    (d / STATE).write_text("not a database either\n" * 100)
    return d / STATE


def _archive_text(d: Path) -> Path:
    (d / ARCHIVE).write_text("nor is this an archive\n" * 100)
    return d / ARCHIVE


DAMAGE = {"text": _text, "truncated": _truncated, "directory": _directory,
          "state_text": _state_text, "archive_text": _archive_text}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_file_stops_start_up_with_one_line_naming_it(tmp_path: Path,
                                                               damage: str) -> None:
    bad = DAMAGE[damage](tmp_path)
    r = run_collector("--data-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert str(bad) in lines[0] and "--reset-state" in lines[0], lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_reset_state_moves_the_damaged_file_aside_and_starts(tmp_path: Path,
                                                             damage: str) -> None:
    bad = DAMAGE[damage](tmp_path)
    was_dir = bad.is_dir()
    before = None if was_dir else bad.read_bytes()
    log = tmp_path / "collector.log"
    c = Collector("--data-dir", str(tmp_path), "--reset-state", log=log)
    try:
        assert healthz(c.url) == {"status": "ok"}
        assert open_incidents(c.url) == []
    finally:
        c.stop()
    (aside,) = tmp_path.glob(f"{bad.name}.damaged-*")
    assert aside.is_dir() if was_dir else aside.read_bytes() == before
    assert bad.is_file()  # a fresh, working file took its place
    sqlite3.connect(bad).execute("PRAGMA quick_check").fetchall()
    text = log.read_text()
    assert f"--reset-state: {bad} cannot be used, moved aside to {aside.name}" in text, text


def test_bad_rows_are_skipped_and_counted_the_good_ones_kept(tmp_path: Path) -> None:
    _valid_incidents_file(tmp_path / INCIDENTS, n=3)
    db = sqlite3.connect(tmp_path / INCIDENTS)
    db.execute("UPDATE incidents SET body = '{not json' WHERE id = 'id0'")
    db.execute("UPDATE incidents SET body = ? WHERE id = 'id1'",
               (json.dumps({"impacted": [], "page": {}, "confidence": 1.0}),))
    db.commit()
    db.close()
    log = tmp_path / "collector.log"
    c = Collector("--data-dir", str(tmp_path), log=log)
    try:
        r = httpx.get(c.url + "/api/incidents", timeout=10)
        assert r.status_code == 200
        assert [i["id"] for i in r.json()["incidents"]] == ["id2"]
        assert metric(c.url, "conway_state_skipped_rows", file=INCIDENTS) == 2
    finally:
        c.stop()
    text = log.read_text()
    assert f"warning: the incidents file {tmp_path / INCIDENTS}: skipped 2 unreadable rows" \
        in text, text
    assert "id0: bad JSON" in text and "id1: no root_cause" in text, text


@pytest.mark.parametrize("name", [INCIDENTS, STATE])
def test_a_zero_byte_file_is_reported_and_starts_empty(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    log = tmp_path / "collector.log"
    c = Collector("--data-dir", str(tmp_path), log=log)
    try:
        assert healthz(c.url) == {"status": "ok"}
    finally:
        c.stop()
    assert f"{tmp_path / name} is empty (0 bytes)" in log.read_text()


def test_a_read_only_data_dir_stops_start_up_with_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as data:
        r = run_collector("--data-dir", str(data))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(data) in lines[0] and "Read-only" in lines[0], r.stderr


# -- one collector per data dir --------------------------------------------------------------

def test_a_second_collector_on_the_same_data_dir_exits_2_naming_the_first(
        tmp_path: Path) -> None:
    first = Collector("--data-dir", str(tmp_path))
    try:
        r = run_collector("--data-dir", str(tmp_path))
        assert r.returncode == 2, r.stderr
        assert f"--data-dir {tmp_path} is in use by another collector (PID " \
               f"{first.proc.pid})" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert healthz(first.url) == {"status": "ok"}  # the first one is untouched
    finally:
        first.stop()
    # The lock ends with its process: now another may start on the dir.
    second = Collector("--data-dir", str(tmp_path))
    second.stop()
    assert second.proc.returncode == 0


# -- background loops that fail for another reason -------------------------------------------

def test_failing_background_loops_log_once_and_go_on_with_backoff(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from collector.config import CheckpointConfig, CollectorConfig, DiagnosisConfig
    from collector.wiring import build_service

    service = build_service(CollectorConfig(
        data_dir=tmp_path, checkpoint=CheckpointConfig(interval_s=0.01),
        diagnosis=DiagnosisConfig(evaluate_interval_s=0.01)))
    diag, cp = service.parts["diagnosis"], service.parts["checkpoint"]
    calls = {"evaluate": 0, "save": 0}

    def flaky(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls[name] += 1
            if calls[name] <= 2:
                raise RuntimeError(f"{name} bug")
            return real(*args)
        return call

    diag.evaluate = flaky("evaluate", diag.evaluate)
    cp.save = flaky("save", cp.save)

    async def scenario() -> None:
        for start in service.on_startup:
            await start()
        try:
            while min(calls.values()) < 4:  # two failures, 1 s and 2 s of backoff, then on
                await asyncio.sleep(0.05)
        finally:
            for stop in reversed(service.on_shutdown):
                await stop()

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert time.monotonic() - started >= 3.0  # backed off 1 s, then 2 s
    err = capsys.readouterr().err
    assert err.count("a diagnosis evaluation failed, retrying with backoff") == 1, err
    assert "RuntimeError: evaluate bug" in err
    assert "diagnosis evaluations work again (after 2 failed)" in err
    assert err.count("the checkpoint loop failed, retrying with backoff") == 1, err
    assert "RuntimeError: save bug" in err
