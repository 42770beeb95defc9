"""The collector's hub: fan-out of decoded spans to consumers, and the snapshot pipeline.

Each concern (graph, ownership, diagnosis) registers itself here through an
``install(service, config)`` function in its own module; ``collector.wiring`` calls them in
pipeline order. Nothing here knows a wire format or a concern's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.routing import BaseRoute

from collector.model import Snapshot, SpanRecord
from collector.pipeline import Appender, run_pipeline

Clock = Callable[[], float]


class SpanConsumer(Protocol):
    """Anything that takes decoded spans. ``now`` is epoch seconds from the service clock."""

    def consume(self, spans: Sequence[SpanRecord], now: float) -> None: ...


@dataclass
class CollectorConfig:
    host: str = "127.0.0.1"
    port: int = 4318
    catalog: Path | None = None
    topology: Path | None = None
    scrape: list[str] = field(default_factory=list)
    scrape_interval_s: float = 5.0
    data_dir: Path | None = None
    retention_s: float = 900.0
    bucket_s: float = 1.0
    default_window_s: float = 60.0
    max_body_bytes: int = 8 * 1024 * 1024
    extra: dict[str, Any] = field(default_factory=dict)


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
    lock: threading.RLock = field(default_factory=threading.RLock)

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

    def snapshot(self, window_s: float | None = None, now: float | None = None) -> Snapshot:
        w = self.config.default_window_s if window_s is None else window_s
        t = self.clock() if now is None else now
        with self.lock:
            return run_pipeline(Snapshot(window_s=w, generated_at=t), self.appenders)
