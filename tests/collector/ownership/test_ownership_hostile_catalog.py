"""Hostile and half-written catalogs ("Last one standing"): a YAML alias bomb and a file
truncated to 0 bytes are refused with a short error, and the last good catalog stays in force.

Unit tests read files with ``load_catalog``; the process tests run the real collector
(``python -m collector --catalog PATH``) on a free port and watch it from outside: exit code
and stderr at start-up, ``/api/teams``, ``/healthz``, its log and its resident memory
(``/proc/PID/status`` VmRSS) after a bad edit while it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ownership_helpers import COMPONENT_SVC, GROUP_X, docs, write_catalog
from procs import REPO, Proc, free_port

from collector.ownership.catalog import (
    EMPTY_FILE,
    MAX_ALIAS_NODES,
    MAX_REPORTED_ERRORS,
    CatalogInvalid,
    load_catalog,
)
from collector.ownership.refs import MAX_ECHO_CHARS
from collector.ownership.watch import CatalogStore

TIMEOUT_S = 60.0  # a failure guard on a shared machine, not a speed assertion
MAX_RSS_KB = 200 * 1024
GROUP_Y = GROUP_X.replace("team-x", "team-y").replace("Team X", "Team Y")


def alias_bomb(levels: int, field: str = "owner") -> str:
    """A Component whose ``spec.<field>`` is ``levels`` of nine-fold aliases (9**levels
    strings once expanded; 8 levels printed in full is ~300 MB) in about 500 bytes."""
    lines = [
        "apiVersion: backstage.io/v1alpha1",
        "kind: Component",
        "metadata:",
        "  name: svc",
        "spec:",
        "  l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"  {field}: *a{levels}")
    return "\n".join(lines) + "\n"


def errors_of(path: Path, **kw: Any) -> CatalogInvalid:
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(path, **kw)
    return info.value


# -- load_catalog -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["owner", "system", "dependsOn", "lifecycle"])
def test_an_alias_bomb_is_refused_naming_the_limit(tmp_path: Path, field: str) -> None:
    assert len(alias_bomb(8, field)) < 600
    path = write_catalog(tmp_path, GROUP_X, alias_bomb(8, field))
    exc = errors_of(path)
    [err] = exc.errors
    assert (err.document, err.field) == (2, "")
    assert "alias" in err.message and "MAX_ALIAS_NODES" in err.message
    assert str(MAX_ALIAS_NODES) in err.message
    assert len(str(exc)) < 1000


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC + "  links: &l [*l]\n")
    [err] = errors_of(path).errors
    assert "cycle" in err.message


def test_a_small_alias_use_still_loads(tmp_path: Path) -> None:
    """A merge of shared defaults is ordinary YAML, far below the limit."""
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC.replace(
        "spec:\n", "spec:\n  defaults: &d {type: service, lifecycle: production}\n  <<: *d\n"))
    assert {r.name for r in load_catalog(path).components} == {"svc"}


def test_echoed_values_are_cut_short(tmp_path: Path) -> None:
    """A bad value below the alias limit (or just a long one) is quoted in at most
    MAX_ECHO_CHARS characters, in every message that quotes one."""
    long = "x" * 5000
    path = write_catalog(
        tmp_path, GROUP_X,
        COMPONENT_SVC.replace("owner: team-x", f"owner: [{long}, {long}]"),
        COMPONENT_SVC.replace("name: svc", "name: svc2").replace("team-x", f"user:{long}"),
        COMPONENT_SVC.replace("name: svc", f"name: {long}"),
        COMPONENT_SVC.replace("kind: Component", f"kind: {long}"),
        COMPONENT_SVC.replace("name: svc", "name: svc3").replace("team-x", f"system:{long}"),
    )
    exc = errors_of(path)
    assert len(exc.errors) >= 5
    for err in exc.errors:
        assert "x" * (MAX_ECHO_CHARS + 1) not in err.message
        assert len(err.message) < MAX_ECHO_CHARS + 200
    assert len(str(exc)) < 4000


def test_the_message_lists_a_bounded_number_of_problems(tmp_path: Path) -> None:
    bad = [COMPONENT_SVC.replace("name: svc", f"name: s{i}").replace("team-x", "nobody")
           for i in range(MAX_REPORTED_ERRORS * 3)]
    exc = errors_of(write_catalog(tmp_path, GROUP_X, *bad))
    assert f"({MAX_REPORTED_ERRORS * 3} problem(s))" in str(exc)
    assert f"and {MAX_REPORTED_ERRORS * 2} more problem(s)" in str(exc)
    assert str(exc).count("\n") == MAX_REPORTED_ERRORS + 1


@pytest.mark.parametrize("text", ["", "   \n\n\t\n"], ids=["0-bytes", "whitespace"])
def test_an_empty_file_is_an_error_saying_why(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog-info.yaml"
    path.write_text(text)
    [err] = errors_of(path).errors
    assert err.message.startswith(EMPTY_FILE + "; ")
    assert "start without --catalog" in err.message
    [err] = errors_of(path, last_good_at=0.0).errors
    assert err.message == (f"{EMPTY_FILE}; keeping the last good catalog from "
                           "1970-01-01 00:00:00 UTC")


def test_an_empty_file_in_a_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "groups.yaml").write_text(GROUP_X)
    (tmp_path / "new.yaml").write_text("")
    [err] = errors_of(tmp_path).errors
    assert err.file == str(tmp_path / "new.yaml") and EMPTY_FILE in err.message


def test_a_comment_only_file_is_still_an_empty_catalog(tmp_path: Path) -> None:
    """Deliberately empty (it says something) is not "being written"."""
    path = tmp_path / "catalog-info.yaml"
    path.write_text("# no entities yet\n")
    assert load_catalog(path).entities == 0


def test_the_store_keeps_the_last_good_catalog_over_an_empty_file(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = CatalogStore(path, clock=lambda: 86400.0)
    store.load_initial()
    good = store.catalog
    path.write_text("")
    assert store.reload() is False
    assert store.catalog is good
    [err] = store.errors
    assert err.message == (f"{EMPTY_FILE}; keeping the last good catalog from "
                           "1970-01-02 00:00:00 UTC")


# -- the real collector -------------------------------------------------------------------


def run_collector(catalog: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", "--host", "127.0.0.1", "--port", str(free_port()),
         "--catalog", str(catalog)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_startup_with_an_alias_bomb_exits_2_with_a_short_error(tmp_path: Path) -> None:
    proc = run_collector(write_catalog(tmp_path, GROUP_X, alias_bomb(8)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr) < 2048, len(proc.stderr)
    assert "the catalog is invalid" in proc.stderr
    assert "MAX_ALIAS_NODES" in proc.stderr and "alias" in proc.stderr


def test_startup_with_an_empty_catalog_exits_2_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "catalog-info.yaml"
    path.write_text("")
    proc = run_collector(path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr) < 2048, len(proc.stderr)
    assert EMPTY_FILE in proc.stderr


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Proc, str, Path]]:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    port = free_port()
    proc = Proc([sys.executable, "-m", "collector", "--host", "127.0.0.1", "--port", str(port),
                 "--catalog", str(path)], tmp_path / "collector.log",
                env={"PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/healthz", TIMEOUT_S)
        yield proc, url, path
    finally:
        proc.stop()


def teams_when(url: str, done: Any) -> dict[str, Any]:
    """``/api/teams`` polled until ``done(body)``; its size is checked on every answer."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        raw = httpx.get(url + "/api/teams", timeout=10, trust_env=False)
        assert raw.status_code == 200
        assert len(raw.content) < 20_000, len(raw.content)
        body: dict[str, Any] = raw.json()
        if done(body):
            return body
        assert time.monotonic() < deadline, json.dumps(body)[:2000]
        time.sleep(0.05)


def team_names(body: dict[str, Any]) -> set[str]:
    return {t["name"] for t in body["teams"]}


def first_error(body: dict[str, Any]) -> str:
    errors = body["catalog"]["errors"]
    return str(errors[0]["message"]) if errors else ""


def test_bomb_and_empty_file_at_runtime_keep_the_last_good_catalog(
    running: tuple[Proc, str, Path],
) -> None:
    proc, url, path = running
    pid = proc.popen.pid
    body = teams_when(url, lambda b: "team-x" in team_names(b))
    loaded_at = body["catalog"]["loaded_at"]

    path.write_text(docs(GROUP_X, alias_bomb(8)))
    body = teams_when(url, lambda b: "MAX_ALIAS_NODES" in first_error(b))
    assert team_names(body) == {"team-x"}
    assert body["catalog"]["loaded_at"] == loaded_at
    assert len(body["catalog"]["errors"]) == 1
    assert httpx.get(url + "/healthz", timeout=10, trust_env=False).status_code == 200
    assert vm_rss_kb(pid) < MAX_RSS_KB

    path.write_text("")
    body = teams_when(url, lambda b: first_error(b).startswith(EMPTY_FILE))
    assert team_names(body) == {"team-x"}
    assert first_error(body).startswith(
        f"{EMPTY_FILE}; keeping the last good catalog from ")
    assert body["catalog"]["loaded_at"] == loaded_at
    assert vm_rss_kb(pid) < MAX_RSS_KB

    path.write_text(docs(GROUP_X, GROUP_Y, COMPONENT_SVC.replace("team-x", "team-y")))
    body = teams_when(url, lambda b: not b["catalog"]["errors"] and "team-y" in team_names(b))
    assert team_names(body) == {"team-x", "team-y"}
    assert proc.popen.poll() is None

    log = proc.log_path.read_text(errors="replace")
    assert "MAX_ALIAS_NODES" in log and EMPTY_FILE in log
    assert len(log) < 64_000 and max(len(line) for line in log.splitlines()) < 2000
