"""What archiving a minute costs (``collector/archive.py``, with ``--data-dir``): the bytes one
minute's row takes on disk, and how long taking it holds the collector's lock (the past read
of the minute, as ``?at=`` does) and writing it takes, for the demo shop and for a synthetic
5,000 services in 100 teams (``bench/render.py``'s), each a whole collector in this process
(`wiring.build_service`) under a simulated clock, fed a few seconds of replayed calls.

    .venv/bin/python bench/archive.py [--services 5000] [--runs 3]

Prints figures; asserts nothing about time. Also reads one archived minute back through
``GraphArchive.read`` (what ``?at=`` beyond the retention does) and prints that time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector import wiring  # noqa: E402
from collector.archive import EVERY_S, SETTLE_S, archive_taker  # noqa: E402
from collector.config import CollectorConfig, DiagnosisConfig  # noqa: E402
from collector.replay import dependencies_to_spans  # noqa: E402

T0 = 1_699_999_980.0  # a whole minute


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def demo_deps() -> tuple[list[dict[str, Any]], Callable[[str], str] | None]:
    sys.path.insert(0, str(ROOT / "bench"))
    from render import shop_deps

    return shop_deps(), None


def synthetic_deps(services: int) -> tuple[list[dict[str, Any]], Callable[[str], str] | None]:
    sys.path.insert(0, str(ROOT / "bench"))
    from render import synthetic

    return synthetic(services, max(1, services // 50))


def measure(label: str, deps: list[dict[str, Any]], team_of: Callable[[str], str] | None,
            runs: int, seconds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="conway-archive-bench-") as tmp:
        clock = Clock(T0)
        config = CollectorConfig(data_dir=Path(tmp), diagnosis=DiagnosisConfig(
            evaluate_interval_s=3600))
        service = wiring.build_service(config, clock)
        archive = service.parts["archive"]
        take = archive_taker(service)
        for _ in range(seconds):
            clock.t += 1.0
            service.ingest(dependencies_to_spans(deps, int(clock.t * 1e9), team_of=team_of),
                           now=clock.t)
            service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()
        at = T0 + EVERY_S
        clock.t = at + SETTLE_S
        takes, writes, sizes, reads = [], [], [], []
        nodes = edges = 0
        for k in range(runs):
            t = time.perf_counter()
            body = take(at)
            takes.append(time.perf_counter() - t)
            nodes, edges = len(body["nodes"]), len(body["edges"])
            t = time.perf_counter()
            assert archive.record(at + k * EVERY_S, body)
            writes.append(time.perf_counter() - t)
            held = archive.stats()
            sizes.append(held["bytes"] / held["minutes"])
            t = time.perf_counter()
            got = archive.read(at + k * EVERY_S)
            reads.append(time.perf_counter() - t)
            assert got is not None
        service.parts["checkpoint"].close()
        service.parts["diagnosis"].manager.store.close()
        archive.close()
    print(f"{label}: {nodes} nodes, {edges} edges | one minute on disk "
          f"{statistics.median(sizes) / 1024:.1f} kB | take (lock held) first "
          f"{takes[0] * 1000:.0f} ms, median {statistics.median(takes) * 1000:.0f} ms | "
          f"write {statistics.median(writes) * 1000:.0f} ms | read back "
          f"{statistics.median(reads) * 1000:.0f} ms (runs {runs})", flush=True)
    per_day = statistics.median(sizes) * 1440 / 1024 ** 2
    print(f"  a day of minutes: {per_day:.0f} MB; the 256 MB default holds "
          f"{256 / per_day:.1f} days", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=5000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5, help="seconds of replayed calls")
    a = p.parse_args()
    measure("demo shop", *demo_deps(), a.runs, a.seconds)
    measure(f"synthetic {a.services} services", *synthetic_deps(a.services), a.runs, a.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
