"""The collector's hub: fan-out of decoded spans to consumers, and the snapshot pipeline.

Each concern (graph, ownership, diagnosis) registers itself here through an
``install(service, config)`` function in its own module; ``collector.wiring`` calls them in
pipeline order. Nothing here knows a wire format or a concern's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from prometheus_client.registry import CollectorRegistry
from starlette.routing import BaseRoute

from collector.config import CollectorConfig
from collector.model import Snapshot, SpanRecord
from collector.pipeline import Appender, run_pipeline

Clock = Callable[[], float]
T = TypeVar("T")
# Reads share what is costly to build (a snapshot per window, /metrics, their JSON) for
# READ_COST_FACTOR times its build time, at most READ_CACHE_S: a snapshot of 5,000 nodes
# takes a second to build, under the lock ingest needs too.
READ_CACHE_S = 60.0
READ_COST_FACTOR = 4.0
MIN_SHARED_BUILD_S = 0.1
MAX_CACHED_READS = 32  # keys (windows, endpoints) with a cached read


class SpanConsumer(Protocol):
    """Anything that takes decoded spans. ``now`` is epoch seconds from the service clock."""

    def consume(self, spans: Sequence[SpanRecord], now: float) -> None: ...


@dataclass
class CollectorService:
    config: CollectorConfig
    clock: Clock = time.time
    consumers: list[SpanConsumer] = field(default_factory=list)
    appenders: list[Appender] = field(default_factory=list)
    routes: list[BaseRoute] = field(default_factory=list)
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Concerns publish objects other concerns or routes need by name (e.g. "graph", "catalog").
    parts: dict[str, Any] = field(default_factory=dict)
    # What ``/metrics`` serves: each concern's install registers its own collector here.
    metrics: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=False))
    lock: threading.RLock = field(default_factory=threading.RLock)
    read_cache_s: float = READ_CACHE_S
    _reads: dict[Hashable, _Cached] = field(default_factory=dict)
    _read_locks: dict[Hashable, threading.Lock] = field(default_factory=dict)
    _reads_lock: threading.Lock = field(default_factory=threading.Lock)

    def run_in_background(self, work: Callable[[], Coroutine[Any, Any, None]],
                          after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run ``work()`` as a task from start-up; at shutdown cancel it, wait for it to end,
        then await ``after()`` (a final save, closing a store) if given."""
        task: asyncio.Task[None] | None = None

        async def start() -> None:
            nonlocal task
            task = asyncio.create_task(work())

        async def stop() -> None:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if after is not None:
                await after()

        self.on_startup.append(start)
        self.on_shutdown.append(stop)

    def ingest(self, spans: Sequence[SpanRecord], now: float | None = None) -> None:
        t = self.clock() if now is None else now
        with self.lock:
            for consumer in self.consumers:
                consumer.consume(spans, t)

    def snapshot(self, window_s: float | None = None, now: float | None = None, *,
                 historical: bool = False) -> Snapshot:
        """A fresh snapshot of the read pipeline (the appenders change no state).
        ``historical``: ``now`` is a past moment, shown as it was (`collector.history`)."""
        w = self.config.default_window_s if window_s is None else window_s
        t = self.clock() if now is None else now
        with self.lock:
            return run_pipeline(Snapshot(window_s=w, generated_at=t, historical=historical),
                                self.appenders)

    def read_snapshot(self, window_s: float | None = None) -> Snapshot:
        """The snapshot the read API serves, shared by concurrent readers (``cached``).
        Callers must not change it."""
        w = self.config.default_window_s if window_s is None else window_s
        return self.cached(("snapshot", w), lambda: self.snapshot(w))

    def cached(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()``'s value, shared by readers of ``key`` when it is costly: a build that
        took ``MIN_SHARED_BUILD_S`` or more is reused for ``READ_COST_FACTOR`` times what it
        took, counted from when it was built (at most ``read_cache_s``), so however many
        readers there are, building reads holds the lock ingest needs a bounded share of the
        time. A cheap read (a small graph) is built for each reader: it sees its own writes.
        Concurrent readers of one key wait for one build."""
        with self._reads_lock:
            lock = self._read_locks.get(key)
            if lock is None:
                while len(self._read_locks) >= MAX_CACHED_READS:
                    old = next(iter(self._read_locks))
                    del self._read_locks[old]
                    self._reads.pop(old, None)
                lock = self._read_locks[key] = threading.Lock()
        with lock:
            hit = self._reads.get(key)
            if hit is not None and time.monotonic() < hit.until:
                return cast(T, hit.value)
            start = time.monotonic()
            value = build()
            self.offer(key, value, time.monotonic() - start)
            return value

    def cached_json(self, key: Hashable, payload: Callable[[], Any]) -> bytes:
        """``payload()`` rendered as JSON bytes (as Starlette's ``JSONResponse`` renders it),
        shared by readers as ``cached`` shares it: rendering a large graph's JSON costs the
        interpreter as much as building it, and the receivers wait for the interpreter too."""
        return self.cached(key, lambda: json.dumps(
            payload(), ensure_ascii=False, allow_nan=False, indent=None,
            separators=(",", ":")).encode("utf-8"))

    def offer(self, key: Hashable, value: object, took_s: float) -> None:
        """Give readers of ``key`` a value built elsewhere (an evaluation's snapshot) that
        took ``took_s`` to build; it is kept as if ``cached`` had built it."""
        if took_s < MIN_SHARED_BUILD_S:
            self._reads.pop(key, None)  # cheap: every reader gets its own, fresh
            return
        keep = min(self.read_cache_s, READ_COST_FACTOR * took_s)
        self._reads[key] = _Cached(time.monotonic() + keep, value)


@dataclass(frozen=True, slots=True)
class _Cached:
    until: float  # time.monotonic() when it goes stale
    value: object
