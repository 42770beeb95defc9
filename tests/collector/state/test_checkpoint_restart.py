"""Crash safety: the graph checkpointed to SQLite comes back the same.

In-process with a simulated clock (minutes of traffic, so old buckets age into coarse ones and
leave the retention) the restored graph equals the original for every window, and ``/metrics``
too; then a real collector process is killed with SIGKILL and restarted on the same data dir,
and shows the same edges and counts."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_collector import Collector, edge_calls, graph, metric, sdk_call, sdk_provider
from prometheus_client.exposition import generate_latest

from collector import checkpoint
from collector.apijson import graph_json
from collector.config import CollectorConfig
from collector.model import SpanKind, SpanRecord
from collector.service import CollectorService
from collector.wiring import build_service

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def spans_at(rng: random.Random, n: int, seq: Iterator[int]) -> list[SpanRecord]:
    """``n`` traces: user -> web -> (api | db), with some errors and a version change."""
    out = []
    resources: dict[str, dict[str, Any]] = {
        s: {"service.name": s, "service.version": rng.choice(["1", "2"])} for s in ("web", "api")}

    def span(t: bytes, ms: float, svc: str, sid: bytes, parent: bytes, kind: int,
             error: bool = False, attrs: dict[str, Any] | None = None) -> SpanRecord:
        return SpanRecord(t, sid, parent, svc, "op", kind, 0, int(ms * 1e6), error,
                          attrs or {}, resources[svc])

    for _ in range(n):
        t = next(seq).to_bytes(16, "big")
        root, client, server, db = (next(seq).to_bytes(8, "big") for _ in range(4))
        ms = rng.uniform(1, 300)
        err = rng.random() < 0.1
        out += [span(t, ms, "web", root, b"", SpanKind.SERVER),
                span(t, ms, "web", client, root, SpanKind.CLIENT, err),
                span(t, ms, "api", server, client, SpanKind.SERVER, err),
                span(t, ms, "web", db, root, SpanKind.CLIENT,
                     attrs={"db.system": "postgresql", "db.namespace": "orders"})]
    return out


def make(data_dir: Path, clock: Clock) -> CollectorService:
    return build_service(CollectorConfig(data_dir=data_dir, retention_s=300.0,
                                         default_window_s=60.0), clock=clock)


def views(service: CollectorService) -> dict[str, Any]:
    g = service.parts["graph"]
    out: dict[str, Any] = {}
    for window in (1, 10, 60, 150, 300):
        snap = service.snapshot(float(window))
        out[f"graph{window}"] = graph_json(snap)
        out[f"series{window}"] = [(p.t, p.rate_rps, p.p95_ms)
                                  for p in g.series("web", snap.generated_at, float(window))]
    text = generate_latest(service.parts["metrics_registry"]).decode()
    out["metrics"] = sorted(line for line in text.splitlines()
                            if not line.startswith("#") and "checkpoint" not in line
                            and "inflight" not in line
                            # The diagnosis (traces in flight, its counters) is not
                            # checkpointed: a restart starts it afresh.
                            and not line.startswith("conway_diagnosis_"))
    return out


def test_restored_graph_equals_the_original(tmp_path: Path) -> None:
    clock = Clock(T0)
    service = make(tmp_path, clock)
    cp: checkpoint.Checkpointer = service.parts["checkpoint"]
    rng = random.Random(3)
    seq = iter(range(1, 10**9))
    counters = service.parts["ingest"]
    for second in range(400):  # past the 300 s retention: buckets age, merge and leave
        batch = spans_at(rng, rng.randint(0, 6), seq)
        service.ingest(batch, clock.t)
        counters.spans_received += len(batch)
        if second % 3 == 0:
            with service.lock:
                service.parts["graph"].tick(clock.t)
        if second % 2 == 0:
            cp.save(clock.t)
        clock.t += 1.0
    with service.lock:
        service.parts["graph"].tick(clock.t)
    cp.save(clock.t)
    before = views(service)
    cp.close()

    restored = make(tmp_path, Clock(clock.t))
    assert restored.parts["checkpoint"].restored_rows > 0
    after = views(restored)
    for key in before:
        assert after[key] == before[key], key
    edges = {(e["source"], e["target"]): e for e in after["graph300"]["edges"]}
    assert set(edges) == {("user", "web"), ("web", "api"), ("web", "orders")}
    restored.parts["checkpoint"].close()


def test_only_changed_buckets_are_written(tmp_path: Path) -> None:
    clock = Clock(T0)
    service = make(tmp_path, clock)
    cp: checkpoint.Checkpointer = service.parts["checkpoint"]
    rng = random.Random(5)
    seq = iter(range(1, 10**9))
    for _ in range(100):
        service.ingest(spans_at(rng, 3, seq), clock.t)
        clock.t += 1.0
    first = cp.save(clock.t)
    # One more second of traffic touches one bucket per node and per edge, not 100 of them.
    service.ingest(spans_at(rng, 3, seq), clock.t)
    second = cp.save(clock.t)
    assert first > 200 and second < 30
    assert cp.save(clock.t) <= 2  # nothing changed: the counters row only (and maybe meta)
    db = sqlite3.connect(tmp_path / checkpoint.DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    cp.close()


def test_a_state_file_from_another_schema_is_refused_with_a_message(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / checkpoint.DB_NAME)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '99')")
    db.commit()
    db.close()
    with pytest.raises(checkpoint.CheckpointError, match="move the file away"):
        make(tmp_path, Clock(T0))


def test_a_corrupt_state_file_stops_the_process_with_a_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    from live_collector import REPO

    (tmp_path / checkpoint.DB_NAME).write_bytes(b"this is not a database" * 100)
    r = subprocess.run([sys.executable, "-m", "collector", "--port", "0", "--data-dir",
                        str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"cannot open the state file {tmp_path / checkpoint.DB_NAME}" in r.stderr
    assert "Traceback" not in r.stderr


# -- the real thing: kill -9 ----------------------------------------------------------------

def wait_checkpoints(url: str, count: float) -> None:
    import time

    deadline = time.monotonic() + 20
    while metric(url, "conway_checkpoints_total") < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_kill_9_and_restart_keeps_the_graph(tmp_path: Path) -> None:
    first = Collector("--data-dir", str(tmp_path), "--pairing-ttl", "30")
    second: Collector | None = None
    try:
        front = sdk_provider(first.url, "k9-front")
        cart = sdk_provider(first.url, "k9-cart")
        try:
            for _ in range(25):
                sdk_call(front, cart)
        finally:
            front.shutdown()
            cart.shutdown()
        import time

        deadline = time.monotonic() + 20
        while edge_calls(first.url, "k9-front", "k9-cart") < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Wait for two checkpoints after the last span (not a fixed sleep): the second one
        # began after everything was ingested.
        wait_checkpoints(first.url, metric(first.url, "conway_checkpoints_total") + 2)
        before_graph = graph(first.url)
        before_received = metric(first.url, "conway_spans_received_total")
        before_calls = edge_calls(first.url, "k9-front", "k9-cart")
        first.kill()  # SIGKILL: no shutdown hook, no final checkpoint

        second = Collector("--data-dir", str(tmp_path), "--pairing-ttl", "30")
        after_graph = graph(second.url)
        assert before_calls == 25
        assert edge_calls(second.url, "k9-front", "k9-cart") == 25
        assert metric(second.url, "conway_spans_received_total") == before_received == 50

        def edges(g: dict[str, Any]) -> dict[tuple[str, str], tuple[Any, ...]]:
            return {(e["source"], e["target"]): (e["calls"], e["errors"], e["p95_ms"])
                    for e in g["edges"]}

        assert edges(after_graph) == edges(before_graph)
        assert edges(after_graph)[("k9-front", "k9-cart")][0] == 25
        assert {n["id"] for n in after_graph["nodes"]} == {n["id"] for n in before_graph["nodes"]}
        # The restarted collector keeps counting on top of what it restored.
        r = httpx.get(second.url + "/api/services/k9-cart", params={"window": 900})
        assert r.status_code == 200 and r.json()["callers"][0]["service"] == "k9-front"
    finally:
        first.stop()
        if second is not None:
            second.stop()
