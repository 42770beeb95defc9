"""Crash safety: the graph's state checkpointed to SQLite (WAL) in ``--data-dir``.

What is saved: the rolling-window buckets of node and edge statistics, the nodes (kind, last
seen, versions), the edges' connection types, the cumulative per-edge totals behind the
service-graph series of ``/metrics``, and the counters (ingest, pairing, caps). What is not:
halves waiting to be paired (at most the pairing TTL of calls) and the scraper's live state.

Every ``interval_s`` (1 s) the checkpointer takes, under the service lock, only what changed
since the last checkpoint (`TrafficGraph.export_changes`: the buckets touched, the nodes and
edges seen) and writes it in one transaction outside the lock; after ``kill -9`` a restart with
the same data dir therefore loses at most about one interval of aggregates. A failed write is
counted and the next checkpoint replaces the file's contents with the whole state
(`TrafficGraph.export_all`). Start-up puts the file back with `TrafficGraph.restore`. The file
is ``state.sqlite3``, next to diagnosis's ``incidents.sqlite3``.

Failures (a full disk): a failed checkpoint is logged once per episode with SQLite's own error
(a failed rollback never replaces it), counted (``conway_checkpoint_failures_total`` and
``conway_state_write_errors_total{file="state.sqlite3"}``), and retried every interval; while
it fails ``/healthz`` says ``degraded`` and names the file and the error (`StateFiles`). A
checkpoint loop that fails for any other reason logs the traceback and goes on with backoff.

The data dir is locked (``flock`` on ``DIR/.lock``, holding the PID) for the process lifetime:
a second collector on the same dir exits 2 (`lock_data_dir`). A state file that cannot be used
stops start-up with a one-line `CheckpointError` naming it; ``--reset-state`` moves such a file
aside (`move_aside`). A zero-byte state file (no WAL either) starts empty with a warning: it
holds nothing to lose (SQLite writes a header at once, so it is a crash before the first write
or a truncated copy, either way no saved state).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.config import CollectorConfig
from collector.exposition import EdgeTotalState, IngestCounters
from collector.graph import GraphChanges, NodeState, TrafficGraph
from collector.service import CollectorService
from collector.stats import COARSE_FACTOR, Change, SlotState, VersionSeen

DB_NAME = "state.sqlite3"
SCHEMA_VERSION = 1
# Buckets older than the retention are deleted from the file this often (a full scan).
HORIZON_EVERY_S = 60.0
LOCK_NAME = ".lock"
# A background loop that fails unexpectedly waits this long, doubling up to the maximum.
BACKOFF_S = (1.0, 60.0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    stats TEXT NOT NULL, key TEXT NOT NULL, coarse INTEGER NOT NULL, idx INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, server_errors INTEGER NOT NULL,
    client_errors INTEGER NOT NULL, bins BLOB NOT NULL,
    PRIMARY KEY (stats, key, coarse, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, seen REAL, versions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edges (
    source TEXT NOT NULL, target TEXT NOT NULL, connection_type TEXT NOT NULL,
    PRIMARY KEY (source, target));
CREATE TABLE IF NOT EXISTS edge_totals (
    client TEXT NOT NULL, server TEXT NOT NULL, connection_type TEXT NOT NULL,
    total INTEGER NOT NULL, failed INTEGER NOT NULL, server_hist TEXT NOT NULL,
    client_hist TEXT NOT NULL, server_sum REAL NOT NULL, client_sum REAL NOT NULL,
    PRIMARY KEY (client, server, connection_type));
"""


class CheckpointError(RuntimeError):
    """The data dir's state file cannot be used; the message says what to do. ``path``: the
    file at fault, when ``--reset-state`` may move it aside."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def lock_data_dir(data_dir: Path) -> int:
    """Lock ``data_dir`` for this process's lifetime (``flock`` on ``DIR/.lock``, which then
    holds our PID); returns the descriptor, to keep open. `CheckpointError` when another
    process holds it (naming its PID when the file says) or the dir cannot be written."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(f"cannot write to --data-dir {data_dir}: {exc.strerror} "
                              f"({path}); give a writable --data-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            other = os.read(fd, 32).decode(errors="replace").strip()
        except OSError:
            other = ""
        os.close(fd)
        who = f"another collector (PID {other})" if other.isdigit() else "another process"
        if isinstance(exc, BlockingIOError):
            raise CheckpointError(f"--data-dir {data_dir} is in use by {who} (it holds "
                                  f"{path}); stop it or give this collector its own "
                                  f"--data-dir") from None
        raise CheckpointError(f"cannot lock --data-dir {data_dir}: {exc.strerror} "
                              f"({path})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the lock holds; only the PID in the message of a second collector is lost
    return fd


def move_aside(path: Path) -> Path:
    """Rename a damaged state file (and its ``-wal``/``-shm``) to ``NAME.damaged-TIMESTAMP``;
    returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if os.path.lexists(side):
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def check_state_file(path: Path, what: str) -> None:
    """Refuse a directory where an SQLite file should be; warn about a zero-byte file (with no
    WAL that could fill it), which starts empty."""
    if path.is_dir():
        raise OSError(f"{what} {path} is a directory, not an SQLite file")
    wal = path.with_name(path.name + "-wal")
    if (path.is_file() and path.stat().st_size == 0
            and not (wal.is_file() and wal.stat().st_size > 0)):
        print(f"conway collector: warning: {what} {path} is empty (0 bytes), starting with "
              f"nothing restored from it", file=sys.stderr, flush=True)


def open_state_db(path: Path | None, schema: str, *, quick_check: bool = True
                  ) -> sqlite3.Connection:
    """An autocommit connection to a data-dir file (``None``: in memory), usable from any
    thread (callers serialise it), in WAL mode with ``synchronous=NORMAL`` (a commit survives a
    process crash, kill -9; only a power loss may undo the last ones), checked with
    ``quick_check`` when asked and with ``schema`` applied. Raises ``sqlite3.Error`` (after
    closing what it opened): the caller names the file and what to do."""
    db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False,
                         isolation_level=None)
    try:
        if path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if quick_check:
                bad = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)")]
                if bad != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(bad))
        db.executescript(schema)
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            db.close()
        raise
    return db


class WriteFailures:
    """Failed writes to one data-dir file: counted (``write_errors``), SQLite's error kept
    while writes fail (``write_error``, since ``write_error_since``), in episodes, so the
    writer logs once when writes start failing and once when they work again."""

    def __init__(self) -> None:
        self.write_errors = 0
        self.write_error: str | None = None
        self.write_error_since: float | None = None
        self._episode_start = 0  # write_errors when the failing episode began

    def failed(self, exc: BaseException) -> bool:
        """Count a failed write; True when it starts an episode (the writer says so)."""
        self.write_errors += 1
        first = self.write_error is None
        if first:
            self.write_error_since = time.time()
            self._episode_start = self.write_errors - 1
        self.write_error = str(exc)
        return first

    def succeeded(self) -> tuple[int, str] | None:
        """A write worked: the failed writes and last error of the episode it ends, if any."""
        if self.write_error is None:
            return None
        ended = (self.write_errors - self._episode_start, self.write_error)
        self.write_error = self.write_error_since = None
        return ended


class StateFiles(Collector):
    """The data dir's writers (the checkpointer, the incident store), each with ``path`` and
    ``writes`` (its `WriteFailures`). ``/healthz`` reads `problems`; a ``prometheus_client``
    Collector for ``conway_state_write_errors_total{file}``."""

    def __init__(self, writers: list[Any]) -> None:
        self.writers = writers

    def problems(self) -> list[dict[str, Any]]:
        return [{"file": str(w.path), "error": w.writes.write_error,
                 "since": w.writes.write_error_since, "failed_writes": w.writes.write_errors}
                for w in self.writers if w.writes.write_error is not None]

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("conway_state_write_errors",
                                     "Writes to a data-dir file that failed (retried later)",
                                     labels=["file"])
        skipped = GaugeMetricFamily("conway_state_skipped_rows",
                                    "Unreadable rows of a data-dir file skipped at start-up",
                                    labels=["file"])
        for w in self.writers:
            errors.add_metric([w.path.name], w.writes.write_errors)
            skipped.add_metric([w.path.name], getattr(w, "skipped_rows", 0))
        yield errors
        yield skipped


def _pack_bins(bins: dict[int, int]) -> bytes:
    flat = array("q")
    for k, n in bins.items():
        flat.append(k)
        flat.append(n)
    return flat.tobytes()


def _unpack_bins(blob: bytes) -> dict[int, int]:
    flat = array("q")
    flat.frombytes(blob)
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _edge_key_text(key: Hashable) -> str:
    return json.dumps(list(key)) if isinstance(key, tuple) else json.dumps(key)


def _edge_key(text: str) -> Hashable:
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else value


class Checkpointer(Collector):
    """Saves and restores one graph (and the ingest counters) to ``path``.

    ``save`` may run in any one thread at a time; it takes ``lock`` only to collect changes.
    Also a ``prometheus_client`` Collector for its own counters.
    """

    def __init__(self, path: Path, graph: TrafficGraph, ingest: IngestCounters,
                 lock: threading.RLock, bucket_s: float) -> None:
        self.path = path
        self.graph = graph
        self.ingest = ingest
        self.lock = lock
        self.bucket_s = bucket_s
        self.saves = 0
        self.rows_written = 0
        self.last_success: float | None = None
        self.writes = WriteFailures()
        self.restored_rows = 0
        self.state_files: StateFiles | None = None  # set by `install`, for /metrics
        self._full = False
        self._last_horizon = 0.0
        self._write_lock = threading.Lock()
        try:
            check_state_file(path, "the state file")
        except OSError as exc:
            raise CheckpointError(f"{exc}; start with --reset-state to move it aside (or use "
                                  f"another --data-dir)", path) from None
        try:
            # (synchronous=NORMAL: only a power loss may undo the last commits, which is the
            # "about one second" this promises anyway.)
            self.db = open_state_db(path, _SCHEMA, quick_check=False)
        except sqlite3.Error as exc:
            raise CheckpointError(
                f"cannot open the state file {path}: {exc}; check the --data-dir is writable, "
                f"or start with --reset-state to move a damaged file aside", path
            ) from exc

    @property
    def failures(self) -> int:
        return self.writes.write_errors

    @property
    def last_error(self) -> str | None:
        return self.writes.write_error

    # -- restore -----------------------------------------------------------------------------

    def restore(self, now: float) -> int:
        """Load the saved state into the (empty) graph; returns the number of rows read."""
        meta = {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}
        if not meta:
            self._write_meta_static()
            return 0
        if meta.get("schema") != SCHEMA_VERSION:
            raise CheckpointError(
                f"the state file {self.path} has schema {meta.get('schema')!r}, this collector "
                f"writes {SCHEMA_VERSION}; move the file away (or use another --data-dir, or "
                f"start with --reset-state)", self.path
            )
        g = self.graph
        started = meta.get("started_at")
        counters = meta.get("counters") or {}
        state = GraphChanges(
            full=True,
            started_at=float(started) if isinstance(started, int | float) else None,
            nodes=[NodeState(name, kind, seen, [VersionSeen(str(v), float(f), float(la))
                                                for v, f, la in json.loads(versions)])
                   for name, kind, seen, versions in self.db.execute(
                       "SELECT name, kind, seen, versions FROM nodes")],
            edges=[((source, target), ctype) for source, target, ctype in self.db.execute(
                "SELECT source, target, connection_type FROM edges")],
            totals=[EdgeTotalState((c, s, ct), total, failed, json.loads(sh), json.loads(ch),
                                   ssum, csum)
                    for c, s, ct, total, failed, sh, ch, ssum, csum in self.db.execute(
                        "SELECT client, server, connection_type, total, failed, server_hist, "
                        "client_hist, server_sum, client_sum FROM edge_totals")],
            counters={k: v for k, v in counters.items() if k != "ingest"},
        )
        rows = g.restore(state, now)
        if meta.get("bucket_s") == self.bucket_s:
            rows += g.restore_buckets(self._saved_buckets("n"), self._saved_buckets("e"), now)
        else:
            print(f"conway collector: {self.path} was written with {meta.get('bucket_s')} s "
                  f"buckets, not {self.bucket_s} s; its statistics are not restored",
                  file=sys.stderr)
        self.ingest.restore(counters.get("ingest") or {})
        self._write_meta_static()
        self.restored_rows = rows
        return rows

    def _saved_buckets(self, which: str) -> Iterator[Change]:
        """The buckets of ``which`` ("n": nodes, "e": edges) in the file, read as consumed."""
        for key_text, coarse, idx, calls, errors, se, ce, bins in self.db.execute(
                "SELECT key, coarse, idx, calls, errors, server_errors, client_errors, bins "
                "FROM buckets WHERE stats = ?", (which,)):
            key = key_text if which == "n" else _edge_key(key_text)
            yield key, bool(coarse), idx, (calls, errors, se, ce, _unpack_bins(bins))

    def _write_meta_static(self) -> None:
        with self._tx():
            for key, value in (("schema", SCHEMA_VERSION), ("bucket_s", self.bucket_s),
                               ("started_at", self.graph.started_at)):
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                (key, json.dumps(value)))

    # -- save --------------------------------------------------------------------------------

    def save(self, now: float) -> int:
        """Write what changed since the last save; returns rows written (0 on failure)."""
        with self._write_lock:
            with self.lock:
                changes = self.graph.export_all() if self._full else self.graph.export_changes()
                ingest = self.ingest.export()
                self._full = False
            try:
                written = self._write(changes, ingest, now)
            except (sqlite3.Error, OSError) as exc:
                self._full = True  # what this batch held is lost: rewrite everything next time
                if self.writes.failed(exc):  # once per episode: the disk stays full a while
                    print(f"conway collector: checkpoint to {self.path} failed: {exc}; "
                          f"retrying every checkpoint (the next success rewrites everything)",
                          file=sys.stderr, flush=True)
                return 0
            except BaseException:
                self._full = True
                raise
            ended = self.writes.succeeded()
            if ended is not None:
                print(f"conway collector: checkpoint to {self.path} works again (after "
                      f"{ended[0]} failed checkpoints: {ended[1]})", file=sys.stderr, flush=True)
            self.saves += 1
            self.rows_written += written
            self.last_success = time.time()
            return written

    def _write(self, changes: GraphChanges, ingest: dict[str, object], now: float) -> int:
        db = self.db
        nodes = [(n.name, n.kind, n.seen,
                  json.dumps([[v.version, v.first_seen, v.last_seen] for v in n.versions]))
                 for n in changes.nodes]
        edges = [(source, target, ctype) for (source, target), ctype in changes.edges]
        totals = [(*e.key, e.total, e.failed, json.dumps(e.server), json.dumps(e.client),
                   e.server_sum, e.client_sum) for e in changes.totals]
        buckets = (_bucket_rows("n", changes.node_buckets)
                   + _bucket_rows("e", changes.edge_buckets))
        counters = json.dumps({"ingest": ingest, **changes.counters})
        with self._tx():
            if changes.full:  # the whole state: whatever the file holds besides it is gone
                for table in ("nodes", "edges", "edge_totals", "buckets"):
                    db.execute(f"DELETE FROM {table}")
            db.executemany("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?)", nodes)
            db.executemany("DELETE FROM nodes WHERE name = ?",
                           [(n,) for n in changes.gone_nodes])
            db.executemany("INSERT OR REPLACE INTO edges VALUES (?, ?, ?)", edges)
            db.executemany("DELETE FROM edges WHERE source = ? AND target = ?",
                           changes.gone_edges)
            db.executemany("INSERT OR REPLACE INTO edge_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           totals)
            db.executemany("DELETE FROM edge_totals WHERE client = ? AND server = ? AND "
                           "connection_type = ?", changes.gone_totals)
            db.executemany("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(w, k, c, i, *st[:4], _pack_bins(st[4])) for w, k, c, i, st
                            in buckets if st is not None])
            db.executemany("DELETE FROM buckets WHERE stats = ? AND key = ? AND coarse = ? AND "
                           "idx = ?", [(w, k, c, i) for w, k, c, i, st in buckets if st is None])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('counters', ?)", (counters,))
            if now - self._last_horizon >= HORIZON_EVERY_S:
                self._last_horizon = now
                horizon = int(now / self.bucket_s) - int(round(
                    self.graph.retention_s / self.bucket_s))
                db.execute("DELETE FROM buckets WHERE coarse = 0 AND idx < ?", (horizon,))
                db.execute("DELETE FROM buckets WHERE coarse = 1 AND idx < ?",
                           (horizon // COARSE_FACTOR - 1,))
        return (len(nodes) + len(changes.gone_nodes) + len(edges) + len(changes.gone_edges)
                + len(totals) + len(changes.gone_totals) + len(buckets) + 1)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with transaction(self.db):
            yield

    def close(self) -> None:
        self.db.close()

    # -- /metrics ----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        if self.state_files is not None:
            yield from self.state_files.collect()
        yield CounterMetricFamily("conway_checkpoints", "Checkpoints written to the data dir",
                                  value=self.saves)
        yield CounterMetricFamily("conway_checkpoint_failures",
                                  "Checkpoints that failed (the next one rewrites everything)",
                                  value=self.failures)
        yield CounterMetricFamily("conway_checkpoint_rows", "Rows written by checkpoints",
                                  value=self.rows_written)
        yield GaugeMetricFamily("conway_checkpoint_last_success_timestamp_seconds",
                                "When the last checkpoint was committed (0: never)",
                                value=self.last_success or 0.0)
        yield GaugeMetricFamily("conway_checkpoint_restored_rows",
                                "Rows read from the data dir at start-up",
                                value=self.restored_rows)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT on an autocommit connection. On an error (in the body or the COMMIT)
    the transaction is rolled back if SQLite has not already done so (on a full disk it
    has), and a failed rollback never replaces the error that caused it."""
    if db.in_transaction:  # left open by an earlier failure: nothing of it is wanted
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _bucket_rows(which: str, changes: list[Change]) -> list[tuple[str, str, int, int,
                                                                   SlotState | None]]:
    key_text = (lambda k: str(k)) if which == "n" else _edge_key_text
    return [(which, key_text(key), int(coarse), idx, state)
            for key, coarse, idx, state in changes]


def install(service: CollectorService, config: CollectorConfig) -> Checkpointer | None:
    """With a data dir: restore the graph from it now, then checkpoint every interval and at
    shutdown. Needs ``parts["graph"]`` and ``parts["ingest"]``; publishes
    ``parts["checkpoint"]`` and registers its /metrics collector."""
    if config.data_dir is None:
        return None
    graph: TrafficGraph = service.parts["graph"]
    ingest: IngestCounters = service.parts["ingest"]
    interval = config.checkpoint.interval_s
    cp = Checkpointer(Path(config.data_dir) / DB_NAME, graph, ingest, service.lock,
                      config.bucket_s)
    now = service.clock()
    with service.lock:
        graph.track_changes()
        try:
            cp.restore(now)
        except CheckpointError:
            cp.close()
            raise
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            cp.close()
            raise CheckpointError(
                f"the state file {cp.path} cannot be read ({type(exc).__name__}: {exc}); move "
                f"it away to start with an empty graph (or use another --data-dir, or start "
                f"with --reset-state)", cp.path
            ) from exc
    service.parts["checkpoint"] = cp
    writers: list[Any] = [cp]
    store = getattr(getattr(service.parts.get("diagnosis"), "manager", None), "store", None)
    if getattr(store, "path", None) is not None:
        writers.append(store)
    service.parts["state_files"] = cp.state_files = StateFiles(writers)
    service.metrics.register(cp)

    async def loop() -> None:
        backoff = 0.0
        while True:
            await asyncio.sleep(max(interval, backoff))
            try:
                await asyncio.to_thread(cp.save, service.clock())
            except Exception:  # a bug, not the disk (save handles that): log, go on
                first = backoff == 0.0
                backoff = min(max(2 * backoff, BACKOFF_S[0]), BACKOFF_S[1])
                if first:
                    print(f"conway collector: the checkpoint loop failed, retrying with "
                          f"backoff:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            else:
                backoff = 0.0

    async def last_save() -> None:
        await asyncio.to_thread(cp.save, service.clock())
        cp.close()

    service.run_in_background(loop, last_save)
    return cp

