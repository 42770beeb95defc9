"""The graph beyond the retention: one minute at a time, on disk (``--data-dir``).

The retained statistics (``--retention``, 15 min by default) answer ``GET /api/graph?at=T``
for recent moments; the health log and the buckets they come from live in memory. With a data
dir, every ``every_s`` (60 s) the archiver stores the graph of the minute that just ended as
``?at=`` shows it — rates, error ratios and latency over that minute, the health each node and
call had at its end and the incidents open then — zlib-compressed in ``archive.sqlite3``, one
row per minute. It is taken a few seconds after the minute ends (``SETTLE_S``: the spans of
its last requests have arrived) from the retained buckets, so nothing else is kept for it.

``?at=T`` older than the retained statistics is answered from the archived minute whose end
is nearest ``T`` (within a minute: a gap, when the collector was not running, is a 400 naming
the minutes on either side), with ``"archived": {"at", "window_s"}`` saying which minute and
window it is. ``GET /api/history`` and the dashboard's time bar reach back to the oldest
archived minute.

Bounded on disk by ``max_bytes`` of rows (``--archive-max-mb``, 256 MB by default) and by age
``keep_s`` (``--archive-keep``, 7 days): the oldest minutes go first, counted
(``conway_archive_pruned_minutes_total``). Measured (``bench/archive.py``): a 5,000-service
graph's minute is ~127 kB (~180 MB a day: 256 MB hold ~1.4 days), the demo's ~1.8 kB (a
week: 18 MB). Taking a minute holds the service lock as a past read does (at 5,000 services ~0.36 s,
once a minute); writing it ~0.1 s, outside the lock. A failed write (a full disk) is counted,
named on ``/healthz`` like the other data-dir files, and retried every ``RETRY_S`` (10 s; the
minute taken is kept for it, not taken again); a file that cannot be used stops start-up with
a one-line error (``--reset-state`` moves it aside). Reads never write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import sys
import threading
import traceback
import zlib
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.checkpoint import (
    CheckpointError,
    WriteFailures,
    check_state_file,
    open_state_db,
    transaction,
)
from collector.config import CollectorConfig
from collector.service import CollectorService

DB_NAME = "archive.sqlite3"
EVERY_S = 60.0
SETTLE_S = 3.0  # after a minute ends, before it is taken: its last spans have arrived
# (at most a tenth of the archive's period, for a fine --archive-every)
DEFAULT_MAX_MB = 256.0
DEFAULT_KEEP_S = 7 * 86_400.0
POLL_S = 1.0  # how often the writer looks whether a minute is due
RETRY_S = 10.0  # after a failed write, before the next try (of the same minute, if still due)
ZLIB_LEVEL = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS minutes (
    at REAL PRIMARY KEY,      -- the minute's end (epoch s); it covers [at - window_s, at]
    window_s REAL NOT NULL,
    bytes INTEGER NOT NULL,   -- len(body)
    body BLOB NOT NULL        -- zlib(JSON of GET /api/graph?at=at&window=window_s)
);
"""


class GraphArchive(Collector):
    """The archive file: minutes written by one writer thread, read by any (one connection,
    under a lock). ``take(at)`` builds a minute's body (the graph JSON at ``at``)."""

    def __init__(self, path: Path, *, every_s: float = EVERY_S,
                 max_bytes: int = int(DEFAULT_MAX_MB * 1024 * 1024),
                 keep_s: float = DEFAULT_KEEP_S) -> None:
        if every_s <= 0 or max_bytes <= 0 or keep_s <= 0:
            raise ValueError("archive: every_s, max_bytes and keep_s must be positive")
        self.path = path
        self.every_s = every_s
        self.max_bytes = max_bytes
        self.keep_s = keep_s
        self.writes = WriteFailures()
        self.written = 0
        self.pruned = 0
        self.skipped_rows = 0
        # Minutes ending at or before this are never archived (before observation began).
        self.not_before = -math.inf
        self._closed = False
        self._oldest: float | None = None
        self._newest: float | None = None
        self._rows = self._bytes = 0
        # After a failed write: the minute taken, kept for the retry, and when that is.
        self._pending: tuple[float, dict[str, Any]] | None = None
        self._retry_at = -math.inf
        self._lock = threading.Lock()
        try:
            check_state_file(path, "the archive file")
        except OSError as exc:
            raise CheckpointError(f"{exc}; start with --reset-state to move it aside (or use "
                                  f"another --data-dir)", path) from None
        try:
            self._db = open_state_db(path, _SCHEMA)
            self._count()
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
            raise CheckpointError(
                f"the archive file {path} cannot be used ({exc}); start with --reset-state to "
                f"move it aside, or use another --data-dir", path) from exc

    # -- writing ---------------------------------------------------------------------------

    def due(self, now: float) -> float | None:
        """The end of the newest whole minute not yet archived, once ``SETTLE_S`` past it."""
        end = math.floor((now - min(SETTLE_S, self.every_s / 10)) / self.every_s) \
            * self.every_s
        if end <= self.not_before or (self._newest is not None and end <= self._newest):
            return None
        return end

    def archive_due(self, now: float, take: Callable[[float], dict[str, Any]]) -> float | None:
        """Archive the due minute, if any, taken with ``take(at)`` (the graph JSON at ``at``);
        the minute archived, or None (none due, or its write failed: tried again next time)."""
        at = self.due(now)
        if at is None or now < self._retry_at:
            return None
        # A minute whose write failed is not taken again (its past read holds the lock).
        body = self._pending[1] if self._pending and self._pending[0] == at else take(at)
        if self.record(at, body):
            self._pending, self._retry_at = None, -math.inf
            return at
        self._pending, self._retry_at = (at, body), now + RETRY_S
        return None

    def record(self, at: float, body: dict[str, Any]) -> bool:
        """Store one minute (``body``: the graph JSON at ``at``) and drop what the bounds
        push out. False when the write failed (counted; the caller retries the minute)."""
        if self._closed:
            return False  # shutting down: the last minute is not worth a failed write
        blob = zlib.compress(json.dumps(body, ensure_ascii=False, allow_nan=False,
                                        separators=(",", ":")).encode("utf-8"), ZLIB_LEVEL)
        try:
            with self._lock, transaction(self._db):
                self._db.execute("INSERT OR REPLACE INTO minutes (at, window_s, bytes, body) "
                                 "VALUES (?, ?, ?, ?)", (at, self.every_s, len(blob), blob))
                pruned = self._prune(at)
            with self._lock:
                self._count()  # what was committed
        except sqlite3.Error as exc:
            if self.writes.failed(exc):
                print(f"conway collector: cannot write the archive {self.path} ({exc}); "
                      f"retrying every {RETRY_S:g} s",
                      file=sys.stderr, flush=True)
            return False
        ended = self.writes.succeeded()
        if ended is not None:
            print(f"conway collector: the archive {self.path} is written again after "
                  f"{ended[0]} failed writes ({ended[1]})", file=sys.stderr, flush=True)
        self.written += 1
        self.pruned += pruned
        return True

    def _count(self) -> None:
        """The file's figures (oldest and newest minute, rows, bytes), kept for reads that
        must not query (``due``, ``span``, ``/metrics``)."""
        row = self._db.execute(
            "SELECT MIN(at), MAX(at), COUNT(*), COALESCE(SUM(bytes), 0) FROM minutes"
        ).fetchone()
        self._oldest, self._newest = row[0], row[1]
        self._rows, self._bytes = int(row[2]), int(row[3])

    def _prune(self, newest: float) -> int:
        """Under the lock, in the write's transaction: minutes older than ``keep_s``, then the
        oldest while the file's rows hold more than ``max_bytes`` (the newest always kept).
        Returns how many went."""
        gone = self._db.execute("DELETE FROM minutes WHERE at < ?",
                                (newest - self.keep_s,)).rowcount
        total = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM minutes").fetchone()[0]
        if total <= self.max_bytes:
            return gone
        cut, drop = None, total - self.max_bytes
        for at, size in self._db.execute("SELECT at, bytes FROM minutes WHERE at < ? "
                                         "ORDER BY at", (newest,)).fetchall():
            drop -= size
            cut = at
            if drop <= 0:
                break
        if cut is not None:
            gone += self._db.execute("DELETE FROM minutes WHERE at <= ?", (cut,)).rowcount
        return gone

    # -- reading ---------------------------------------------------------------------------

    def span(self) -> tuple[float, float] | None:
        """(the earliest moment it answers: a minute before the oldest archived minute's end;
        that end), or None when empty."""
        if self._oldest is None:
            return None
        return self._oldest - self.every_s, self._oldest

    def nearest(self, t: float) -> tuple[float | None, float | None]:
        """The archived minute ends just at or before ``t`` and just after it."""
        with self._lock:
            before = self._db.execute("SELECT MAX(at) FROM minutes WHERE at <= ?",
                                      (t,)).fetchone()[0]
            after = self._db.execute("SELECT MIN(at) FROM minutes WHERE at > ?",
                                     (t,)).fetchone()[0]
        return before, after

    def read(self, t: float) -> tuple[float, dict[str, Any]] | None:
        """The archived minute whose end is nearest ``t`` (within ``every_s``), with its body;
        None when no minute is that near (a gap) or its row cannot be read (counted)."""
        before, after = self.nearest(t)
        near = [m for m in (before, after) if m is not None and abs(m - t) <= self.every_s]
        if not near:
            return None
        at = min(near, key=lambda m: (abs(m - t), -m))
        with self._lock:
            row = self._db.execute("SELECT body FROM minutes WHERE at = ?", (at,)).fetchone()
        try:
            body = json.loads(zlib.decompress(row[0]).decode("utf-8"))
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except (TypeError, ValueError, zlib.error) as exc:
            self.skipped_rows += 1
            print(f"conway collector: warning: archived minute {at} in {self.path} cannot be "
                  f"read ({exc}); skipped", file=sys.stderr, flush=True)
            return None
        return at, body

    def stats(self) -> dict[str, Any]:
        """What ``GET /api/history`` says of the archive."""
        return {"file": str(self.path), "minutes": self._rows, "bytes": self._bytes,
                "max_bytes": self.max_bytes, "keep_s": self.keep_s, "every_s": self.every_s,
                "oldest_end": self._oldest, "newest_end": self._newest,
                "written": self.written, "pruned": self.pruned}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("conway_archive_minutes",
                                "Minutes of the graph archived on disk (--data-dir)",
                                value=self._rows)
        yield GaugeMetricFamily("conway_archive_bytes",
                                "Bytes of the archived minutes (compressed graph JSON)",
                                value=self._bytes)
        yield GaugeMetricFamily("conway_archive_max_bytes",
                                "The archive's bound (--archive-max-mb); the oldest minutes go "
                                "first", value=self.max_bytes)
        yield GaugeMetricFamily("conway_archive_oldest_seconds",
                                "The end of the oldest archived minute (unix time; 0: none)",
                                value=self._oldest or 0.0)
        yield CounterMetricFamily("conway_archive_written_minutes",
                                  "Minutes written to the archive", value=self.written)
        yield CounterMetricFamily("conway_archive_pruned_minutes",
                                  "Archived minutes dropped by the size or age bound",
                                  value=self.pruned)


def writer_loop(archive: GraphArchive, clock: Callable[[], float],
                take: Callable[[float], dict[str, Any]]
                ) -> Callable[[], Coroutine[Any, Any, None]]:
    """The background task: every ``POLL_S``, in a thread, `GraphArchive.archive_due`. A
    minute whose write failed is tried again each time until the next one is due (minutes a
    stopped collector did not see are a gap)."""

    async def loop() -> None:
        backoff = 0.0
        while True:
            await asyncio.sleep(max(POLL_S, backoff))
            if archive.due(clock()) is None:
                continue
            try:
                await asyncio.to_thread(archive.archive_due, clock(), take)
            except Exception:  # a bug, not the disk (record counts that): log, go on
                first = backoff == 0.0
                backoff = min(max(2 * backoff, 5.0), 60.0)
                if first:
                    print(f"conway collector: the archive loop failed, retrying with "
                          f"backoff:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            else:
                backoff = 0.0

    return loop


def install(service: CollectorService, config: CollectorConfig) -> GraphArchive | None:
    """With a data dir (and ``--archive-max-mb`` above 0): open the archive, name it among
    the data-dir files ``/healthz`` reports, put its figures on ``/metrics``, serve it to
    ``?at=`` (``parts["archive"]``) and archive each minute in the background."""
    cp = config.checkpoint
    if config.data_dir is None or cp.archive_max_mb <= 0:
        return None
    archive = GraphArchive(Path(config.data_dir) / DB_NAME, every_s=cp.archive_every_s,
                           max_bytes=int(cp.archive_max_mb * 1024 * 1024),
                           keep_s=cp.archive_keep_s)
    archive.not_before = service.parts["graph"].started_at
    service.parts["archive"] = archive
    files = service.parts.get("state_files")
    if files is not None:
        files.writers.append(archive)
    service.metrics.register(archive)

    async def close() -> None:
        archive.close()

    service.run_in_background(writer_loop(archive, service.clock,
                                          archive_taker(service, archive.every_s)),
                              close)
    return archive


def archive_taker(service: CollectorService,
                  every_s: float = EVERY_S) -> Callable[[float], dict[str, Any]]:
    """What a minute's row holds: ``GET /api/graph?at=AT&window=60``'s body, as the
    retained statistics, the health log and the incidents give it."""
    from collector.apijson import graph_json

    def take(at: float) -> dict[str, Any]:
        return graph_json(service.snapshot(every_s, at, historical=True))

    return take
