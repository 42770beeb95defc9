"""Root-cause accuracy: Conway's diagnosis versus a naive ranking, on random topologies.

Each scenario draws a topology (10-60 services in layers, 3-8 teams, databases and external
APIs, optional dependencies with fallbacks, retries, client timeouts, background error noise
on some services, 1 % of spans lost), simulates request traces as SpanRecords for a healthy
baseline and then a fault period with one or two injected faults (errors, latency or down,
on a service or on a virtual node), and feeds them through the real collector: the graph's
traffic appender and the diagnosis consumer and appenders on one ``CollectorService`` with an
injected clock.

It prints AC@1 and AC@3 (for a scenario with fault set F and ranking R:
sum over i<k of [R[i] in F] / min(k, |F|), averaged) for Conway's ``root_causes`` and for the
naive ranking (services by error ratio, then p95, in the fault period), per fault kind, plus
Conway's false alarms on scenarios with no fault (at the end, and at any second of their
last ``FAULT_S`` seconds). Seeded and deterministic:
``python bench/rca.py [--scenarios N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector import diagnosis, graph  # noqa: E402
from collector.config import CollectorConfig, DiagnosisConfig  # noqa: E402
from collector.model import Attributes, SpanKind, SpanRecord  # noqa: E402
from collector.service import CollectorService  # noqa: E402

NS = 1_000_000  # ns per ms
BASELINE_S = 60
FAULT_S = 20
RPS = 5
TIMEOUT_MS = 1000.0
MAX_SPANS = 60  # per simulated request, so deep fan-out stays bounded
SPAN_LOSS = 0.01
MIN_TARGET_RATE = 1.0  # a fault target must see >= 1 request/s, or there is nothing to see
DB_SYSTEMS = ("postgresql", "mysql", "redis", "mongodb")


@dataclass(frozen=True)
class Dep:
    callee: str
    optional: bool
    retries: int
    p_call: float
    attrs: dict[str, Any] | None = None  # uninstrumented callee (virtual node)


@dataclass
class Topology:
    services: list[str]
    entries: list[str]
    deps: dict[str, list[Dep]]
    self_ms: dict[str, float]
    noise: dict[str, float]
    ports: dict[str, int]
    virtuals: list[str]
    peer_service: dict[str, bool]  # whether a service's CLIENT spans name the peer


@dataclass
class Fault:
    kind: str  # errors | latency | down
    error_rate: float = 0.0
    latency_ms: float = 0.0


def make_topology(rng: random.Random) -> Topology:
    n = rng.randint(10, 60)
    services = [f"svc-{i:02d}" for i in range(n)]
    depth = rng.randint(3, 6)
    n_entries = rng.randint(1, 3)
    layer = {s: 0 for s in services[:n_entries]}
    for s in services[n_entries:]:
        layer[s] = rng.randint(1, depth)
    by_layer: dict[int, list[str]] = defaultdict(list)
    for s in services:
        by_layer[layer[s]].append(s)
    virtuals: list[str] = []
    deps: dict[str, list[Dep]] = {s: [] for s in services}
    for s in services:
        lower = [t for t in services if layer[t] > layer[s]]
        if not lower:
            continue
        near = [t for t in lower if layer[t] == layer[s] + 1] or lower
        k = rng.choice((1, 1, 2, 2, 3))
        chosen = set(rng.sample(near, min(len(near), k)))
        if rng.random() < 0.2:
            chosen.add(rng.choice(lower))
        for t in sorted(chosen):
            deps[s].append(Dep(t, optional=rng.random() < 0.25,
                               retries=1 if rng.random() < 0.3 else 0,
                               p_call=rng.choice((1.0, 0.8, 0.5, 0.3))))
    # Every non-entry service needs a caller, or it sees no traffic at all.
    for s in services[n_entries:]:
        if not any(d.callee == s for ds in deps.values() for d in ds):
            callers = [c for c in services if layer[c] < layer[s]]
            deps[rng.choice(callers)].append(Dep(s, False, 0, 1.0))
    for i in range(max(1, n // 8)):
        system = rng.choice(DB_SYSTEMS)
        if rng.random() < 0.25:
            name, attrs = f"api-{i}.partner.example", {"server.address":
                                                       f"api-{i}.partner.example"}
        else:
            name = f"db-{i}"
            attrs = {"db.system": system, "db.namespace": name}
        virtuals.append(name)
        for c in rng.sample(services, rng.randint(1, 2)):
            deps[c].append(Dep(name, optional=rng.random() < 0.15, retries=0, p_call=1.0,
                               attrs=attrs))
    self_ms = {s: math.exp(rng.uniform(math.log(1.0), math.log(40.0))) for s in services}
    for v in virtuals:
        self_ms[v] = math.exp(rng.uniform(math.log(0.5), math.log(15.0)))
    noise = {s: rng.uniform(0.005, 0.05) for s in services if rng.random() < 0.3}
    ports = {s: 9000 + i for i, s in enumerate(services)}
    peer = {s: rng.random() < 0.5 for s in services}
    return Topology(services, services[:n_entries], deps, self_ms, noise, ports, virtuals, peer)


@dataclass
class Simulator:
    topo: Topology
    rng: random.Random
    faults: dict[str, Fault] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _ids: int = 0

    def __post_init__(self) -> None:
        self.resources: dict[str, Attributes] = {s: {"service.name": s, "service.version": "1.0",
                              "team": f"team-{hash(s) % 5}"} for s in self.topo.services}

    def _id(self, n: int) -> bytes:
        self._ids += 1
        return self._ids.to_bytes(n, "big")

    def request(self, t_s: float) -> list[SpanRecord]:
        spans: list[SpanRecord] = []
        entry = self.rng.choice(self.topo.entries)
        self._server(entry, self._id(16), b"", int(t_s * 1e9), spans)
        # Exporters drop spans now and then (queues full, sampling): lose SPAN_LOSS of them.
        return [s for s in spans if self.rng.random() >= SPAN_LOSS]

    def _jitter(self, ms: float) -> float:
        return ms * math.exp(self.rng.gauss(0.0, 0.25))

    def _span(self, spans: list[SpanRecord], tid: bytes, sid: bytes, parent: bytes,
              service: str, kind: int, start: int, end: int, error: bool,
              attrs: dict[str, Any]) -> None:
        spans.append(SpanRecord(tid, sid, parent, service, "op", kind, start, end, error,
                                attrs, self.resources[service]))

    def _server(self, service: str, tid: bytes, parent: bytes, start: int,
                spans: list[SpanRecord]) -> tuple[int, bool]:
        self.visits[service] += 1
        sid = self._id(8)
        fault = self.faults.get(service)
        t = start + NS // 5
        failed = False
        for dep in self.topo.deps[service]:
            if len(spans) >= MAX_SPANS or self.rng.random() > dep.p_call:
                continue
            for attempt in range(dep.retries + 1):
                t, err = self._call(service, dep, tid, sid, t, spans)
                if not err:
                    break
                t += NS // 2 * (attempt + 1)  # backoff before the retry
            if err and not dep.optional:
                failed = True
        own = self._jitter(self.topo.self_ms[service])
        if fault is not None and fault.kind == "latency":
            own += self._jitter(fault.latency_ms)
        t += int(own * NS)
        p_err = self.topo.noise.get(service, 0.0)
        if fault is not None and fault.kind == "errors":
            p_err += fault.error_rate
        if self.rng.random() < p_err:
            failed = True
        self._span(spans, tid, sid, parent, service, SpanKind.SERVER, start, t, failed,
                   {"server.port": self.topo.ports[service]})
        return t, failed

    def _call(self, caller: str, dep: Dep, tid: bytes, parent: bytes, t: int,
              spans: list[SpanRecord]) -> tuple[int, bool]:
        cid = self._id(8)
        fault = self.faults.get(dep.callee)
        if dep.attrs is not None:  # a database or external API: only the client span exists
            self.visits[dep.callee] += 1
            ms = self._jitter(self.topo.self_ms[dep.callee])
            err = False
            if fault is not None:
                if fault.kind == "down":
                    ms, err = self._jitter(1.0), True
                elif fault.kind == "latency":
                    ms += self._jitter(fault.latency_ms)
                else:
                    err = self.rng.random() < fault.error_rate
            if ms > TIMEOUT_MS:
                ms, err = TIMEOUT_MS, True
            end = t + int(ms * NS)
            self._span(spans, tid, cid, parent, caller, SpanKind.CLIENT, t, end, err,
                       dict(dep.attrs))
            return end, err
        attrs: dict[str, Any] = {"server.address": "127.0.0.1",
                                 "server.port": self.topo.ports[dep.callee]}
        if self.topo.peer_service[caller]:
            attrs["peer.service"] = dep.callee
        if fault is not None and fault.kind == "down":
            self.visits[dep.callee] += 1
            # Half refused at once, half hang until the client times out; no server span.
            ms = 1.0 if self.rng.random() < 0.5 else TIMEOUT_MS
            end = t + int(ms * NS)
            self._span(spans, tid, cid, parent, caller, SpanKind.CLIENT, t, end, True, attrs)
            return end, True
        server_end, err = self._server(dep.callee, tid, cid, t + NS // 10, spans)
        end = server_end + NS // 10
        if (end - t) / NS > TIMEOUT_MS:
            end, err = t + int(TIMEOUT_MS * NS), True  # the client gives up; the server goes on
        self._span(spans, tid, cid, parent, caller, SpanKind.CLIENT, t, end, err, attrs)
        return end, err


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run_scenario(seed: int, n_faults: int, options: dict[str, float] | None = None
                 ) -> dict[str, Any]:
    rng = random.Random(seed)
    topo = make_topology(rng)
    sim = Simulator(topo, random.Random(seed + 1))
    clock = Clock(1_700_000_000.0)
    config = CollectorConfig(diagnosis=DiagnosisConfig.from_options(
        {"baseline_s": 300.0, **(options or {})}))
    service = CollectorService(config=config, clock=clock)
    graph.install(service, config)
    diagnosis.install(service, config)

    alarms: set[str] = set()  # fault-free scenarios: anything named at any second

    def drive(seconds: int, watch: bool = False) -> None:
        for _ in range(seconds):
            for i in range(RPS):
                service.ingest(sim.request(clock.t + i / RPS), now=clock.t)
            clock.t += 1.0
            # As live: the collector evaluates every second (its clock tick).
            service.parts["graph"].tick(clock.t)
            service.parts["diagnosis"].evaluate()
            if watch:
                alarms.update(f"{c['service']}:{c['kind']}"
                              for c in service.snapshot().meta["root_causes"])

    drive(BASELINE_S)
    busy = [s for s in topo.services + topo.virtuals
            if sim.visits[s] / BASELINE_S >= MIN_TARGET_RATE]
    targets: list[str] = []
    for _ in range(n_faults):
        # 40 % of the faults on databases/external APIs when any is busy enough.
        virt = [s for s in busy if s in topo.virtuals and s not in targets]
        pool = virt if virt and rng.random() < 0.4 else \
            [s for s in busy if s not in topo.virtuals and s not in targets]
        if pool:
            targets.append(rng.choice(pool))
    for target in targets:
        # A down entry service has no caller to notice: only a scrape (not simulated) would.
        allowed = ("errors", "latency") if target in topo.entries else (
            "errors", "latency", "down")
        kind = rng.choice(allowed)
        sim.faults[target] = Fault(kind, error_rate=rng.uniform(0.1, 1.0),
                                   latency_ms=rng.uniform(60.0, 600.0))
    baseline_visits = dict(sim.visits)
    drive(FAULT_S, watch=not targets)
    for _ in range(3):
        clock.t += 1.0
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()
    snap = service.snapshot()
    conway = [c["service"] for c in snap.meta["root_causes"]]
    kinds = {c["service"]: c["kind"] for c in snap.meta["root_causes"]}
    fault_snap = service.snapshot(window_s=float(FAULT_S))
    ranked = sorted((n for n in fault_snap.nodes.values() if n.id != "user"),
                    key=lambda n: (-n.error_ratio, -(n.p95_ms or 0.0), n.id))
    naive = [n.id for n in ranked]
    label = "none"
    if len(targets) == 1:
        t = targets[0]
        label = f"{sim.faults[t].kind} on {'virtual' if t in topo.virtuals else 'service'}"
    elif targets:
        label = "two faults"
    described = [f"{t}:{sim.faults[t].kind}"
                 + (f"@{sim.faults[t].error_rate:.2f}" if sim.faults[t].kind == "errors" else "")
                 + (f"+{sim.faults[t].latency_ms:.0f}ms" if sim.faults[t].kind == "latency"
                    else "")
                 + f" ({sim.visits[t] - baseline_visits.get(t, 0)} calls in the fault period)"
                 for t in targets]
    return {"label": label, "targets": targets, "described": described, "conway": conway,
            "naive": naive,
            "kind_ok": [kinds.get(t) == sim.faults[t].kind for t in targets if t in kinds],
            "services": len(topo.services), "alarms": sorted(alarms)}


def ac_at(k: int, ranking: list[str], truth: list[str]) -> float:
    if not truth:
        return 0.0
    return sum(1 for r in ranking[:k] if r in truth) / min(k, len(truth))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", type=int, default=240, help="faulty scenarios (default 240)")
    p.add_argument("--healthy", type=int, default=20, help="fault-free scenarios (default 20)")
    p.add_argument("--seed", type=int, default=20260401)
    p.add_argument("--diagnosis", action="append", default=[], metavar="OPTION=VALUE",
                   help="a diagnosis option, as the collector takes it (recent_window_s=0...)")
    a = p.parse_args()
    options = {k: float(v) for k, v in (o.split("=", 1) for o in a.diagnosis)}
    started = time.perf_counter()
    rows: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    kind_ok: list[bool] = []
    misses: list[str] = []
    for i in range(a.scenarios):
        seed = a.seed + 1000 * i
        r = run_scenario(seed, 2 if i % 4 == 3 else 1, options)
        scores = (ac_at(1, r["conway"], r["targets"]), ac_at(3, r["conway"], r["targets"]),
                  ac_at(1, r["naive"], r["targets"]), ac_at(3, r["naive"], r["targets"]))
        rows[r["label"]].append(scores)
        rows["all"].append(scores)
        kind_ok.extend(r["kind_ok"])
        if (scores[0] < 1.0 or scores[1] < 1.0) and len(misses) < 8:
            misses.append(f"  seed {seed}: {', '.join(r['described'])} -> conway "
                          f"{r['conway'][:3]}")
    false_alarms = alarmed = 0
    for i in range(a.healthy):
        r = run_scenario(a.seed + 7 + 1000 * i, 0, options)
        if r["alarms"] and len(misses) < 8:
            misses.append(f"  seed {a.seed + 7 + 1000 * i} (no fault): named {r['alarms']}")
        false_alarms += bool(r["conway"])
        alarmed += bool(r["alarms"])
    elapsed = time.perf_counter() - started

    print(f"RCA benchmark: {a.scenarios} faulty scenarios (every 4th has two faults), "
          f"10-60 services, seed {a.seed}")
    print(f"{'fault kind':<22}{'n':>5}{'Conway AC@1':>13}{'AC@3':>7}{'naive AC@1':>13}{'AC@3':>7}")
    order = sorted(k for k in rows if k != "all") + ["all"]
    for label in order:
        rs = rows[label]
        if not rs:
            continue
        mean = [sum(x[j] for x in rs) / len(rs) for j in range(4)]
        print(f"{label:<22}{len(rs):>5}{mean[0]:>13.3f}{mean[1]:>7.3f}{mean[2]:>13.3f}"
              f"{mean[3]:>7.3f}")
    if kind_ok:
        print(f"kind right when the service was found: {sum(kind_ok) / len(kind_ok):.3f}")
    print(f"false alarms on {a.healthy} fault-free scenarios: {false_alarms} at the end, "
          f"{alarmed} at any second of the last {FAULT_S} s (root causes checked every second)")
    print(f"elapsed: {elapsed:.1f} s")
    if misses:
        print("first misses:")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
