"""The graph's export/restore interface, which the checkpointer uses: `TrafficGraph.export_changes`
drains what changed, `TrafficGraph.export_all` is the whole state, `TrafficGraph.restore` puts it
back, and each counter holder exports and restores its own counters. Also: a state file written
before this interface existed (``testdata/checkpoint_v1``, by commit 865d1ed) restores the same,
and a failed checkpoint write is followed by a rewrite that restores the same."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest

from collector import checkpoint
from collector.config import CollectorConfig
from collector.exposition import IngestCounters
from collector.graph import GraphChanges, TrafficGraph
from collector.limits import DEFAULT_MEMORY
from collector.model import SpanKind, SpanRecord
from collector.pairing import PairingCounters
from collector.readapi import graph_json
from collector.service import CollectorService
from collector.stats import RollingStats, VersionLog
from collector.wiring import build_service

T0 = 1_800_000_000.0
V1 = Path(__file__).parent / "testdata" / "checkpoint_v1"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def traces(rng: random.Random, seq: Iterator[int], n: int, db: str = "orders",
           version: str = "1") -> list[SpanRecord]:
    """``n`` traces user -> web -> api, web -> ``db`` (a database), some failing."""
    resources: dict[str, dict[str, Any]] = {
        "web": {"service.name": "web", "service.version": version},
        "api": {"service.name": "api"}}

    def span(t: bytes, ms: float, sid: bytes, parent: bytes, svc: str, kind: int,
             error: bool = False, attrs: dict[str, Any] | None = None) -> SpanRecord:
        return SpanRecord(t, sid, parent, svc, "op", kind, 0, int(ms * 1e6), error,
                          attrs or {}, resources[svc])

    out = []
    for _ in range(n):
        t = next(seq).to_bytes(16, "big")
        root, client, server, query = (next(seq).to_bytes(8, "big") for _ in range(4))
        ms = rng.uniform(1, 300)
        err = rng.random() < 0.1
        out += [span(t, ms, root, b"", "web", SpanKind.SERVER),
                span(t, ms, client, root, "web", SpanKind.CLIENT, err),
                span(t, ms, server, client, "api", SpanKind.SERVER, err),
                span(t, ms, query, root, "web", SpanKind.CLIENT,
                     attrs={"db.system": "postgresql", "db.namespace": db})]
    return out


def nothing_changed(c: GraphChanges) -> bool:
    return not (c.nodes or c.gone_nodes or c.edges or c.gone_edges or c.totals
                or c.gone_totals or c.node_buckets or c.edge_buckets)


def views(service: CollectorService) -> dict[str, Any]:
    g: TrafficGraph = service.parts["graph"]
    out: dict[str, Any] = {}
    for window in (1, 10, 60, 150, 300):
        snap = service.snapshot(float(window))
        out[f"graph{window}"] = graph_json(snap)
        out[f"series{window}"] = [(p.t, p.rate_rps, p.p95_ms)
                                  for p in g.series("web", snap.generated_at, float(window))]
    text = generate_latest(service.parts["metrics_registry"]).decode()
    # Halves waiting to pair, write errors and the diagnosis are not part of the state.
    out["metrics"] = sorted(line for line in text.splitlines()
                            if not line.startswith("#") and "checkpoint" not in line
                            and "inflight" not in line and "pending" not in line
                            and "state_write_errors" not in line
                            and not line.startswith("conway_diagnosis_"))
    return out


def run(service: CollectorService, clock: Clock, seconds: int, seed: int = 3,
        each_second: Any = None) -> None:
    """Traffic for ``seconds``; ``orders`` goes quiet after 60 s, so it leaves the retention."""
    rng = random.Random(seed)
    seq = iter(range(1, 10**9))
    g: TrafficGraph = service.parts["graph"]
    for second in range(seconds):
        batch = traces(rng, seq, rng.randint(0, 5), db="billing" if second > 60 else "orders",
                       version="1" if second < 100 else "2")
        service.ingest(batch, clock.t)
        if second % 3 == 0:
            with service.lock:
                g.tick(clock.t)
        if each_second is not None:
            each_second(second)
        clock.t += 1.0
    with service.lock:
        g.tick(clock.t)


def test_export_changes_drains_what_changed() -> None:
    g = TrafficGraph(retention_s=300.0, started_at=T0)
    g.track_changes()
    rng, seq = random.Random(1), iter(range(1, 10**9))
    g.consume(traces(rng, seq, 3), T0)
    first = g.export_changes()
    assert not first.full
    assert {n.name for n in first.nodes} == {"user", "web", "api", "orders"}
    edges = {("user", "web"), ("web", "api"), ("web", "orders")}
    assert {k for k, _ in first.edges} == edges
    assert {t.key[:2] for t in first.totals} == edges
    assert {b[0] for b in first.node_buckets} == {"web", "api", "orders"}
    assert {b[0] for b in first.edge_buckets} == edges
    assert first.counters["graph"]["spans"] == 12 and first.counters["pairing"]["paired"] == 3

    second = g.export_changes()
    assert nothing_changed(second) and not second.full
    assert second.counters == first.counters

    # One more call from web to api a second later: those nodes, that edge, one bucket each.
    _, client, server, _ = traces(rng, seq, 1)
    g.consume([client, server], T0 + 1)
    third = g.export_changes()
    assert {n.name for n in third.nodes} == {"web", "api"}
    assert third.edges == []  # known edge, same connection type
    assert [t.key for t in third.totals] == [("web", "api", "")]
    assert [(k, c, i) for k, c, i, _ in third.edge_buckets] == [(("web", "api"), False, T0 + 1)]
    assert [(k, c, i) for k, c, i, _ in third.node_buckets] == [("api", False, T0 + 1)]
    assert nothing_changed(g.export_changes())


def test_export_changes_before_any_tracking_is_the_whole_state() -> None:
    g = TrafficGraph(retention_s=300.0, started_at=T0)
    g.consume(traces(random.Random(2), iter(range(1, 10**9)), 2), T0)
    first = g.export_changes()
    assert first.full and {n.name for n in first.nodes} == set(g.kinds)
    g.consume(traces(random.Random(3), iter(range(10**6, 10**9)), 1), T0 + 1)
    later = g.export_changes()  # tracked since the first export
    assert not later.full and {n.name for n in later.nodes} == {"web", "api"}


def test_export_all_holds_everything_and_tracks_from_then_on() -> None:
    clock = Clock(T0)
    service = build_service(CollectorConfig(retention_s=300.0), clock=clock)
    g: TrafficGraph = service.parts["graph"]
    g.track_changes()
    run(service, clock, 200, each_second=lambda s: s % 7 == 0 and g.export_changes())
    with service.lock:
        everything = g.export_all()
    assert everything.full
    assert {n.name for n in everything.nodes} == set(g.kinds) == {
        "user", "web", "api", "orders", "billing"}
    web = next(n for n in everything.nodes if n.name == "web")
    assert web.kind == "service" and web.seen == clock.t - 1
    assert [v.version for v in web.versions] == ["1", "2"]
    assert dict(everything.edges) == g.connection_types
    assert sorted(t.key for t in everything.totals) == [k for k, _ in g.totals.items()]
    assert not (everything.gone_nodes or everything.gone_edges or everything.gone_totals)
    # Every call within the retention is in some bucket, fine or coarse.
    assert sum(state[0] for *_, state in everything.edge_buckets if state) == g.calls
    assert any(coarse for _, coarse, _, _ in everything.edge_buckets)
    assert everything.counters == g.export_counters()
    # The export holds copies: more calls in the newest bucket do not change it.
    buckets = json.dumps([b[1:] for b in everything.node_buckets])
    service.ingest(traces(random.Random(9), iter(range(10**8, 10**9)), 3), clock.t - 1)
    assert json.dumps([b[1:] for b in everything.node_buckets]) == buckets
    assert not nothing_changed(g.export_changes())
    assert nothing_changed(g.export_changes())


def test_a_graph_restored_from_export_all_answers_the_same() -> None:
    clock = Clock(T0)
    original = build_service(CollectorConfig(retention_s=300.0, default_window_s=60.0),
                             clock=clock)
    run(original, clock, 400)  # past the retention: buckets age, merge and leave
    g: TrafficGraph = original.parts["graph"]
    assert "orders" not in g.kinds and g.versions.dropped == 0
    with original.lock:
        state = g.export_all()

    restored = build_service(CollectorConfig(retention_s=300.0, default_window_s=60.0),
                             clock=Clock(clock.t))
    r: TrafficGraph = restored.parts["graph"]
    put_back = r.restore(state, clock.t)
    # Coarse buckets reaching back past the retention at `now` are left out.
    assert 0 < put_back <= (len(state.nodes) + len(state.edges) + len(state.totals)
                            + len(state.node_buckets) + len(state.edge_buckets))
    assert r.started_at == g.started_at == T0
    assert r.export_counters() == g.export_counters()
    assert graph_json(restored.snapshot(60.0)) == graph_json(original.snapshot(60.0))
    before, after = views(original), views(restored)
    for key in before:
        assert after[key] == before[key], key


def test_a_gone_node_and_edge_show_up_once() -> None:
    g = TrafficGraph(retention_s=30.0, started_at=T0)
    g.track_changes()
    rng, seq = random.Random(4), iter(range(1, 10**9))
    g.consume(traces(rng, seq, 2, db="billing"), T0)
    g.export_changes()
    for t in range(1, 41):  # billing is not called again: it leaves the 30 s retention
        g.consume(traces(rng, seq, 1, db="orders"), T0 + t)
    g.tick(T0 + 40)
    assert "billing" not in g.kinds
    gone = g.export_changes()
    assert gone.gone_nodes == ["billing"]
    assert gone.gone_edges == [("web", "billing")]
    assert gone.gone_totals == [("web", "billing", "database")]
    assert "billing" not in {n.name for n in gone.nodes}
    again = g.export_changes()
    assert not (again.gone_nodes or again.gone_edges or again.gone_totals)


def test_forgotten_then_seen_again_before_an_export_is_changed_not_gone() -> None:
    g = TrafficGraph(retention_s=30.0, started_at=T0)
    g.track_changes()
    rng, seq = random.Random(5), iter(range(1, 10**9))
    g.consume(traces(rng, seq, 2, db="billing"), T0)
    g.export_changes()
    g.consume(traces(rng, seq, 1, db="orders"), T0 + 40)
    g.tick(T0 + 40)
    assert "billing" not in g.kinds
    g.consume(traces(rng, seq, 1, db="billing"), T0 + 41)
    c = g.export_changes()
    assert not (c.gone_nodes or c.gone_edges or c.gone_totals)
    assert "billing" in {n.name for n in c.nodes}
    assert ("web", "billing") in dict(c.edges)
    assert ("web", "billing", "database") in {t.key for t in c.totals}


def test_counter_holders_export_and_restore_their_own_counters() -> None:
    pc = PairingCounters(paired=3, dropped=2, duplicates=7)
    copy = PairingCounters(roots=9)
    copy.restore({**pc.export(), "no_such_counter": 5})
    assert copy == pc
    copy.restore({"paired": 1})  # missing ones are 0
    assert copy == PairingCounters(paired=1)

    ingest = IngestCounters(spans_received=10, spans_rejected=2, truncated_values=1)
    ingest.request("/v1/traces", 200)
    ingest.reject_spans({"invalid_id": 2})
    ingest.reject_request("malformed")
    back = IngestCounters()
    back.restore(json.loads(json.dumps(ingest.export())))
    assert back == ingest

    log, stats = VersionLog(max_per_service=1), RollingStats(1.0, 10.0)
    log.record("a", "1", 0.0)
    log.record("a", "2", 1.0)
    stats.record("k", 1000.0, 1.0, False)
    stats.record("k", 1.0, 1.0, False)
    assert log.export_counters() == {"dropped": 1}
    assert stats.export_counters() == {"late_dropped": 1}
    log.restore_counters({})
    stats.restore_counters({"late_dropped": 4})
    assert (log.dropped, stats.late_dropped) == (0, 4)

    g = TrafficGraph(started_at=T0)
    g.consume(traces(random.Random(6), iter(range(1, 10**9)), 4), T0)
    fresh = TrafficGraph(started_at=T0)
    fresh.restore_counters(json.loads(json.dumps(g.export_counters())))
    assert fresh.export_counters() == g.export_counters()
    assert (fresh.spans, fresh.calls, fresh.pairer.counters) == (16, 12, g.pairer.counters)


def test_a_failed_write_is_followed_by_a_rewrite_that_restores_the_same(tmp_path: Path) -> None:
    clock = Clock(T0)
    config = CollectorConfig(data_dir=tmp_path, retention_s=300.0, default_window_s=60.0)
    service = build_service(config, clock=clock)
    cp: checkpoint.Checkpointer = service.parts["checkpoint"]
    failed: list[int] = []

    def save(second: int) -> None:
        if second % 2:
            return
        failing = second in (380, 382)  # fine buckets age into coarse ones meanwhile
        cp.db.execute(f"PRAGMA query_only = {'ON' if failing else 'OFF'}")
        if cp.save(clock.t) == 0:
            failed.append(second)

    run(service, clock, 400, each_second=save)
    cp.save(clock.t)
    assert failed == [380, 382] and cp.failures == 2
    before = views(service)
    cp.close()

    restored = build_service(config, clock=Clock(clock.t))
    after = views(restored)
    for key in before:
        assert after[key] == before[key], key
    restored.parts["checkpoint"].close()


def test_a_state_file_written_before_the_interface_restores_the_same(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / checkpoint.DB_NAME)
    db.executescript((V1 / "state.sql").read_text())
    db.close()
    expected = json.loads((V1 / "expected.json").read_text())
    now = expected["now"]
    service = build_service(CollectorConfig(data_dir=tmp_path, retention_s=300.0,
                                            default_window_s=60.0), clock=Clock(now))
    g: TrafficGraph = service.parts["graph"]
    # As the collector that wrote it counted: buckets past the retention are not restored.
    assert service.parts["checkpoint"].restored_rows == 94

    def same(value: Any) -> Any:
        return json.loads(json.dumps(value))

    # The caps shown beside the counts are the running collector's (its memory budget's
    # shares), not state: the pairing cap is today's.
    for key in ("graph60", "graph300"):
        expected[key]["limits"]["max_pending"] = DEFAULT_MEMORY.pairing_max_items
    assert same(graph_json(service.snapshot(60.0))) == expected["graph60"]
    assert same(graph_json(service.snapshot(300.0))) == expected["graph300"]
    assert same({n: [[v.version, v.first_seen, v.last_seen] for v in g.versions_of(n)]
                 for n in sorted(g.kinds)}) == expected["versions"]
    assert same([[p.t, p.rate_rps, p.p95_ms] for p in g.series("web", now, 300.0)]) == \
        expected["series300"]
    assert service.parts["ingest"].spans_received == 240
    assert g.export_counters()["graph"]["calls"] == 180
    assert g.export_counters()["pairing"]["roots"] == 60
    service.parts["checkpoint"].close()
