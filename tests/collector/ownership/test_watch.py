"""Unit tests for ``collector.ownership.watch``: catalog fingerprints, ``CatalogStore`` loads and
reloads (the last good catalog stays in force), waiting for a generation, and the polling
watcher, on real files in ``tmp_path``. Watcher tests poll every 10 ms and every wait is
bounded; each watcher task is cancelled (and awaited) before its test ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from ownership_helpers import COMPONENT_SVC, GROUP_X, docs, write_catalog

from collector.ownership.catalog import EMPTY_FILE, CatalogInvalid, when
from collector.ownership.watch import CatalogStore, fingerprint

GROUP_Y = GROUP_X.replace("team-x", "team-y").replace("Team X", "Team Y")
SVC_Y = COMPONENT_SVC.replace("team-x", "team-y")
POLL_S = 0.01
WAIT_S = 5.0  # upper bound for the watcher to act; it normally takes a few polls


class Clock:
    """A settable clock; ``fail_at`` lists call numbers (1-based) that raise instead."""

    def __init__(self, t: float = 1000.0, fail_at: tuple[int, ...] = ()) -> None:
        self.t = t
        self.calls = 0
        self.fail_at = fail_at
        self.failed = threading.Event()

    def __call__(self) -> float:
        self.calls += 1
        if self.calls in self.fail_at:
            self.failed.set()
            raise RuntimeError("clock unavailable")
        return self.t


def replace_text(path: Path, text: str) -> None:
    """Write ``path`` atomically, so a poll never sees it half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def team_of(store: CatalogStore, name: str) -> str | None:
    component = store.catalog.component_named(name)
    return component.owner.name if component is not None and component.owner else None


def loaded(path: Path, clock: Clock | None = None) -> CatalogStore:
    store = CatalogStore(path, clock or Clock())
    store.load_initial()
    return store


def run_watching(store: CatalogStore, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` while ``store.watch`` polls every ``POLL_S``; stop the watcher after."""

    async def main() -> None:
        task = asyncio.create_task(store.watch(POLL_S))
        try:
            await scenario()
            assert not task.done(), "the watcher stopped on its own"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert task.cancelled()

    asyncio.run(main())


async def wait_generation(store: CatalogStore, generation: int,
                          timeout_s: float = WAIT_S) -> bool:
    return await asyncio.to_thread(store.wait_for_generation, generation, timeout_s)


# -- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_of_a_file_is_its_path_size_mtime_and_inode(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X)
    st = path.stat()
    assert fingerprint(path) == ((str(path), st.st_size, st.st_mtime_ns, st.st_ino),)


def test_fingerprint_of_a_folder_lists_its_yaml_files_recursively_in_order(
        tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(GROUP_X)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text(COMPONENT_SVC)
    (tmp_path / "notes.txt").write_text("not a catalog file")
    (tmp_path / "dir.yaml").mkdir()  # a folder named like a catalog file is not one
    names = [entry[0] for entry in fingerprint(tmp_path)]
    assert names == [str(tmp_path / "b.yaml"), str(tmp_path / "sub" / "a.yml")]


def test_fingerprint_of_a_missing_path_or_an_empty_folder_is_empty(tmp_path: Path) -> None:
    assert fingerprint(tmp_path / "nope.yaml") == ()
    assert fingerprint(tmp_path) == ()


def test_fingerprint_changes_with_the_size(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X)
    before = fingerprint(path)
    path.write_text(docs(GROUP_X, COMPONENT_SVC))
    assert fingerprint(path) != before


def test_fingerprint_changes_with_the_mtime_alone(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X)
    st = path.stat()
    before = fingerprint(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = fingerprint(path)
    assert after != before and after[0][1] == before[0][1] and after[0][3] == before[0][3]


def test_fingerprint_changes_when_a_file_is_replaced_with_same_size_and_mtime(
        tmp_path: Path) -> None:
    # An editor's atomic save: a new file (inode) renamed over the old one.
    path = write_catalog(tmp_path, GROUP_X)
    st = path.stat()
    before = fingerprint(path)
    new = tmp_path / "new.tmp"
    new.write_text(path.read_text().replace("team-x", "team-z"))  # same length
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    after = fingerprint(path)
    assert after[0][:3] == before[0][:3]
    assert after != before


# -- CatalogStore: loads and reloads ---------------------------------------------------------


def test_a_store_without_a_path_never_loads_or_changes() -> None:
    store = CatalogStore(None, Clock())
    store.load_initial()
    assert store.reload() is False
    assert store.changed() is False
    assert (store.catalog.entities, store.errors, store.generation) == (0, [], 0)


def test_load_initial_reads_the_catalog_at_the_clocks_time(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path, Clock(1234.5))
    assert store.catalog.loaded_at == 1234.5
    assert store.catalog.entities == 2
    assert team_of(store, "svc") == "team-x"
    assert store.changed() is False


def test_load_initial_raises_on_an_invalid_catalog_and_keeps_the_empty_one(
        tmp_path: Path) -> None:
    path = write_catalog(tmp_path, COMPONENT_SVC)  # its owner team-x does not exist
    store = CatalogStore(path, Clock())
    with pytest.raises(CatalogInvalid, match="team-x does not exist"):
        store.load_initial()
    assert store.catalog.entities == 0


def test_reload_puts_a_new_catalog_in_force(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    clock = Clock(1000.0)
    store = loaded(path, clock)
    path.write_text(docs(GROUP_X, GROUP_Y, SVC_Y))
    assert store.changed() is True
    clock.t = 2000.0
    assert store.reload() is True
    assert team_of(store, "svc") == "team-y"
    assert (store.catalog.loaded_at, store.errors, store.generation) == (2000.0, [], 1)
    assert store.changed() is False


def test_an_invalid_reload_keeps_the_last_good_catalog_and_reports_the_errors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path)
    good = store.catalog
    path.write_text(docs(GROUP_X, COMPONENT_SVC.replace("team-x", "team-gone")))
    with caplog.at_level(logging.ERROR, logger="collector.ownership.watch"):
        assert store.reload() is False
    assert store.catalog is good
    assert store.generation == 1
    [err] = store.errors
    assert (err.file, err.document, err.field) == (str(path), 2, "spec.owner")
    assert "team-gone does not exist" in err.message
    assert "the last good catalog (loaded 1970-01-01 00:16:40 UTC) stays in force" in caplog.text


def test_fixing_the_catalog_clears_the_errors(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path)
    path.write_text("kind: [\n")
    assert store.reload() is False and store.errors
    path.write_text(docs(GROUP_X, GROUP_Y, SVC_Y))
    assert store.reload() is True
    assert (store.errors, store.generation, team_of(store, "svc")) == ([], 2, "team-y")


def test_an_empty_file_on_reload_says_since_when_the_last_good_catalog_is_kept(
        tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path, Clock(1000.0))
    path.write_text("  \n")
    assert store.reload() is False
    [err] = store.errors
    assert err.message == (f"{EMPTY_FILE}; keeping the last good catalog from "
                           f"{when(1000.0)}")
    assert when(1000.0) == "1970-01-01 00:16:40 UTC"
    assert team_of(store, "svc") == "team-x"


def test_an_invalid_edit_is_not_reported_as_a_change_again(tmp_path: Path) -> None:
    # The fingerprint is taken at each reload, so a watcher reads a bad file once, not at
    # every poll.
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path)
    path.write_text("kind: [\n")
    assert store.changed() is True
    assert store.reload() is False
    assert store.changed() is False


def test_a_deleted_catalog_is_a_change_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path)
    path.unlink()
    assert store.changed() is True
    assert store.reload() is False
    assert team_of(store, "svc") == "team-x"
    assert "no such file or folder" in store.errors[0].message


def test_a_file_added_to_a_catalog_folder_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "groups.yaml").write_text(GROUP_X)
    store = loaded(tmp_path)
    assert store.changed() is False
    (tmp_path / "svc.yml").write_text(COMPONENT_SVC)
    assert store.changed() is True
    assert store.reload() is True
    assert team_of(store, "svc") == "team-x"
    (tmp_path / "svc.yml").unlink()
    assert store.changed() is True


def test_a_non_catalog_file_added_to_the_folder_is_not_a_change(tmp_path: Path) -> None:
    (tmp_path / "groups.yaml").write_text(GROUP_X)
    store = loaded(tmp_path)
    (tmp_path / "README.md").write_text("# catalog")
    assert store.changed() is False


# -- wait_for_generation -----------------------------------------------------------------------


def test_wait_for_a_generation_already_reached_returns_at_once(tmp_path: Path) -> None:
    store = loaded(write_catalog(tmp_path, GROUP_X))
    assert store.wait_for_generation(0, 0.0) is True
    assert store.reload() is True
    assert store.wait_for_generation(1, 0.0) is True


def test_wait_for_a_generation_not_reached_times_out(tmp_path: Path) -> None:
    store = loaded(write_catalog(tmp_path, GROUP_X))
    assert store.wait_for_generation(1, 0.05) is False


def test_wait_for_a_generation_wakes_when_another_thread_reloads(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X)
    store = loaded(path)
    path.write_text("kind: [\n")  # a failed load is a generation too
    started = threading.Event()

    def reload_soon() -> None:
        started.wait(WAIT_S)
        store.reload()

    thread = threading.Thread(target=reload_soon)
    thread.start()
    try:
        started.set()
        assert store.wait_for_generation(1, WAIT_S) is True
        assert store.errors
    finally:
        thread.join(WAIT_S)
    assert not thread.is_alive()


# -- watch ------------------------------------------------------------------------------------


def test_the_watcher_reloads_a_changed_catalog(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path)

    async def scenario() -> None:
        replace_text(path, docs(GROUP_X, GROUP_Y, SVC_Y))
        assert await wait_generation(store, 1)
        assert team_of(store, "svc") == "team-y"
        assert store.errors == []

    run_watching(store, scenario)


def test_the_watcher_does_not_reload_an_unchanged_catalog(tmp_path: Path) -> None:
    store = loaded(write_catalog(tmp_path, GROUP_X, COMPONENT_SVC))
    good = store.catalog

    async def scenario() -> None:
        await asyncio.sleep(20 * POLL_S)
        assert store.generation == 0
        assert store.catalog is good

    run_watching(store, scenario)


def test_the_watcher_reads_an_invalid_edit_once_and_keeps_the_good_catalog(
        tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    store = loaded(path)

    async def scenario() -> None:
        replace_text(path, "kind: [\n")
        assert await wait_generation(store, 1)
        assert store.errors[0].message.startswith("not valid YAML")
        assert team_of(store, "svc") == "team-x"
        await asyncio.sleep(20 * POLL_S)
        assert store.generation == 1  # not read again at every poll
        replace_text(path, docs(GROUP_X, GROUP_Y, SVC_Y))
        assert await wait_generation(store, 2)
        assert (store.errors, team_of(store, "svc")) == ([], "team-y")

    run_watching(store, scenario)


def test_the_watcher_survives_a_failing_reload_and_acts_on_later_changes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    clock = Clock(fail_at=(2,))  # call 1: load_initial; call 2: the first reload raises
    store = loaded(path, clock)

    async def scenario() -> None:
        replace_text(path, docs(GROUP_X, GROUP_Y, SVC_Y))
        assert await asyncio.to_thread(clock.failed.wait, WAIT_S)
        replace_text(path, docs(GROUP_X, GROUP_Y, SVC_Y, GROUP_Y.replace("team-y", "team-z")))
        assert await wait_generation(store, 1)
        assert team_of(store, "svc") == "team-y"
        assert store.catalog.entities == 4

    with caplog.at_level(logging.ERROR, logger="collector.ownership.watch"):
        run_watching(store, scenario)
    assert "catalog watcher failed; retrying at the next poll" in caplog.text
    assert "clock unavailable" in caplog.text


def test_the_watcher_retries_a_reload_that_raised_at_the_next_poll(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    clock = Clock(fail_at=(2,))  # call 1: load_initial; call 2: the first reload raises
    store = loaded(path, clock)

    async def scenario() -> None:
        replace_text(path, docs(GROUP_X, GROUP_Y, SVC_Y))
        assert await asyncio.to_thread(clock.failed.wait, WAIT_S)
        # The clock works again; the edit is still unread.
        assert await wait_generation(store, 1, timeout_s=50 * POLL_S)
        assert team_of(store, "svc") == "team-y"

    run_watching(store, scenario)
