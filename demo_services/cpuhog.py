"""The ``cpu_hog`` fault: a noisy neighbour on a shared host.

The incident this simulates is not "service X is broken" but "the machine is busy": one
process on a shared host burns CPU, and every process on that host — here the other demo
services, which all run on the same machine — gets slower at once. Conway has to recognise
that as one shared-host incident (the spans' ``host.name`` resource attribute ties the
services to the host), not as one incident per slowed service.

So the burn must slow the hog's own service only the way a busy host slows every process,
not through Python's GIL. A pure-Python busy loop would hold the GIL whenever it runs and
throttle the service's own event loop — an in-process fault that points at the hog rather
than at the host — and however many such threads ran, together they could never use more than
one core. Each burner thread instead loops ``hashlib.sha256`` over a large zero buffer:
hashlib releases the GIL while it hashes more than 2 KiB, so the thread spends almost all its
time on a core without the GIL and takes the GIL back only for a moment between hashes.
Measured on a 2-core machine: a main thread looping in pure Python next to one burner kept
its throughput (and spent 0-1 % of its time waiting for the GIL, per
``/proc/thread-self/schedstat``), next to a pure-Python burner it lost about half (and, on a
loaded machine, spent 15-22 % of its time waiting for the GIL); with the service idle in its
event loop each burner uses ~1 s of CPU per second. The buffer is large so that those GIL
hand-overs are rare (one per hash, a few milliseconds of hashing each), yet a thread notices
a stop request within one hash.

``CpuHog.set(n)`` starts or stops threads so that ``n`` run; stopping joins them before it
returns (well under 0.5 s), and the service calls ``stop()`` when it shuts down.
"""

from __future__ import annotations

import hashlib
import threading

# 8 MiB: a few ms per hash (about 6 ms with SHA extensions, ~20 ms without).
CHUNK_BYTES = 8 << 20
JOIN_TIMEOUT_S = 2.0


class CpuHog:
    """Daemon threads burning CPU outside the GIL; ``set(n)`` keeps ``n`` of them running."""

    def __init__(self, name: str = "cpu-hog") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running: list[tuple[threading.Thread, threading.Event]] = []
        self._chunk: bytes | None = None

    @property
    def threads(self) -> int:
        with self._lock:
            return len(self._running)

    def set(self, count: int) -> None:
        """Run exactly ``count`` burner threads; returns once surplus ones have exited."""
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")
        with self._lock:
            while len(self._running) < count:
                if self._chunk is None:
                    self._chunk = bytes(CHUNK_BYTES)
                stop = threading.Event()
                thread = threading.Thread(
                    target=_burn,
                    args=(self._chunk, stop),
                    name=f"{self.name}-{len(self._running)}",
                    daemon=True,
                )
                thread.start()
                self._running.append((thread, stop))
            surplus = self._running[count:]
            del self._running[count:]
            if not self._running:
                self._chunk = None
        for _, stop in surplus:
            stop.set()
        for thread, _ in surplus:
            thread.join(JOIN_TIMEOUT_S)

    def stop(self) -> None:
        self.set(0)


def _burn(chunk: bytes, stop: threading.Event) -> None:
    while not stop.is_set():
        hashlib.sha256(chunk).digest()  # releases the GIL while it hashes
