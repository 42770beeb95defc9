"""The catalog in force, and reloading it when its files change, without a restart.

``CatalogStore.reload()`` reads the catalog again; if it is invalid the errors are logged and
kept for the API, and the last good catalog stays in force. A file that is empty (being
written) is one of those errors: "catalog file is empty (being written?); keeping the last good
catalog from <time>". ``watch()`` polls the size, mtime
and inode of every catalog file (a folder is walked again each time, so added and removed
files count) every ``interval_s`` and reloads when that fingerprint changes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from collector.config import CATALOG_POLL_S
from collector.ownership.catalog import (
    Catalog,
    CatalogError,
    CatalogInvalid,
    catalog_files,
    empty_catalog,
    load_catalog,
    when,
)

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    try:
        files = catalog_files(path)
    except CatalogInvalid:
        return ()
    out = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue  # vanished between the walk and the stat: the next poll sees it
        out.append((str(file), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


class CatalogStore:
    """Holds the last good catalog and the outcome of the last load.

    ``generation`` counts load attempts (good or bad); ``wait_for_generation`` lets a caller
    wait for the watcher to act on a change without guessing how long it takes.
    """

    def __init__(self, path: Path | None, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self.catalog: Catalog = empty_catalog()
        self.errors: list[CatalogError] = []
        self.generation = 0
        self._fingerprint: Fingerprint = ()
        self._changed = threading.Condition()

    def load_initial(self) -> None:
        """Load at startup; raise ``CatalogInvalid`` since there is no good catalog to keep."""
        if self.path is None:
            return
        self._fingerprint = fingerprint(self.path)
        self.catalog = load_catalog(self.path, now=self.clock())
        log.info("ownership catalog %s: %d entities", self.path, self.catalog.entities)

    def reload(self) -> bool:
        """Read the catalog again. True if a new catalog is in force, False if it was invalid."""
        if self.path is None:
            return False
        # Taken before reading (an edit during the load is seen at the next poll) and kept only
        # once the load has an outcome: a load that raised is retried at the next poll.
        seen = fingerprint(self.path)
        last_good_at = self.catalog.loaded_at
        try:
            catalog = load_catalog(self.path, now=self.clock(), last_good_at=last_good_at)
        except CatalogInvalid as exc:
            self._fingerprint = seen
            log.error("%s\nthe last good catalog (loaded %s) stays in force", exc,
                      when(last_good_at))
            self._finish(exc.errors)
            return False
        self._fingerprint = seen
        self.catalog = catalog  # one reference swap: readers see the old or the new catalog
        log.info("ownership catalog %s reloaded: %d entities", self.path, catalog.entities)
        self._finish([])
        return True

    def _finish(self, errors: list[CatalogError]) -> None:
        with self._changed:
            self.errors = errors
            self.generation += 1
            self._changed.notify_all()

    def changed(self) -> bool:
        return self.path is not None and fingerprint(self.path) != self._fingerprint

    def wait_for_generation(self, generation: int, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.generation >= generation, timeout_s)

    async def watch(self, interval_s: float = CATALOG_POLL_S) -> None:
        """Poll for changes until cancelled; file I/O runs off the event loop."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await asyncio.to_thread(self.changed):
                    await asyncio.to_thread(self.reload)
            except Exception:  # a watcher that dies silently would freeze ownership
                log.exception("catalog watcher failed; retrying at the next poll")
