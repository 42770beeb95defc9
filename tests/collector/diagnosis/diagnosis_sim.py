"""Hand-built request traces through the demo shop's topology, as SpanRecords.

A request enters ``frontend`` (a root SERVER span, as the graph's ``user`` calls it); each
service makes a CLIENT span per dependency, the callee a SERVER span inside it. Faults: an
error rate (the SERVER span fails), added latency (self time), ``down`` (the CLIENT span fails
after a refused connection and no SERVER span exists), answers read late (a starved caller).
A failed required dependency fails the caller; an optional one is absorbed (fallback).
Background noise fails a service at a rate.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

import procs

from collector.config import CollectorConfig, DiagnosisConfig
from collector.model import SpanKind, SpanRecord
from collector.service import CollectorService


@dataclass(frozen=True)
class Dep:
    callee: str
    optional: bool = False
    attrs: dict | None = None  # set for an uninstrumented callee (database, external API)


@dataclass
class Fault:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    down: bool = False
    timeout: bool = False  # with down: the caller waits, then times out
    queue: bool = False  # latency_ms is the mean of a spread (requests waiting in line)
    # The service reads each answer this much late (a starved caller): its CLIENT spans' own
    # time, after the callee's SERVER span ended; spread out like latency_ms with ``queue``.
    reads_late_ms: float = 0.0


PORTS = {"frontend": 8101, "ad": 8102, "product-catalog": 8103, "recommendation": 8104,
         "checkout": 8105, "cart": 8106, "shipping": 8107, "quote": 8108, "payment": 8109,
         "currency": 8110, "email": 8111, "fraud-detection": 8112}
ORDERS_DB = {"db.system": "postgresql", "db.namespace": "orders"}
REDIS = {"db.system": "redis"}
SHOP: dict[str, list[Dep]] = {
    "frontend": [Dep("product-catalog"), Dep("currency"), Dep("cart"),
                 Dep("recommendation", optional=True), Dep("ad", optional=True), Dep("checkout")],
    "recommendation": [Dep("product-catalog")],
    "checkout": [Dep("cart"), Dep("currency"), Dep("payment"), Dep("shipping"),
                 Dep("email", optional=True), Dep("orders", attrs=ORDERS_DB)],
    "cart": [Dep("redis", attrs=REDIS)],
    "payment": [Dep("fraud-detection")],
    "shipping": [Dep("quote")],
}
SELF_MS = {"checkout": 40.0}  # checkout is slow by nature; the rest take 2 ms of their own
NS = 1_000_000


@dataclass
class Shop:
    topo: dict[str, list[Dep]] = field(default_factory=lambda: SHOP)
    faults: dict[str, Fault] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seed: int = 7
    peer_service: bool = True  # CLIENT spans name their callee with peer.service
    host: str | None = None  # every service's host.name resource attribute, when set

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._ids = 0
        self._resources: dict[tuple[str, str], dict] = {}

    def _id(self, n: int) -> bytes:
        self._ids += 1
        return self._ids.to_bytes(n, "big")

    def _resource(self, service: str) -> dict:
        version = self.versions.get(service, "1.0.0")
        key = (service, version)
        if key not in self._resources:
            self._resources[key] = {"service.name": service, "service.version": version,
                                    "service.namespace": "shop",
                                    **({"host.name": self.host} if self.host else {})}
        return self._resources[key]

    def request(self, t_s: float, entry: str = "frontend") -> list[SpanRecord]:
        spans: list[SpanRecord] = []
        self._visit(entry, self._id(16), b"", int(t_s * 1e9), spans)
        return spans

    def _span(self, spans: list[SpanRecord], tid: bytes, sid: bytes, parent: bytes,
              service: str, kind: int, start: int, end: int, error: bool,
              attrs: dict) -> None:
        spans.append(SpanRecord(tid, sid, parent, service, f"{service} op", kind, start, end,
                                error, attrs, self._resource(service)))

    def _visit(self, service: str, tid: bytes, parent: bytes, start: int,
               spans: list[SpanRecord]) -> tuple[int, bool]:
        sid = self._id(8)
        fault = self.faults.get(service, Fault())
        t = start + NS // 2
        failed = False
        for dep in self.topo.get(service, []):
            cid = self._id(8)
            callee = self.faults.get(dep.callee, Fault())
            if dep.attrs is not None:
                wait_ms = (500.0 if callee.timeout else 1.0) if callee.down else 1.0
                dur = int((wait_ms + callee.latency_ms) * NS)
                err = callee.down or self.rng.random() < callee.error_rate
                self._span(spans, tid, cid, sid, service, SpanKind.CLIENT, t, t + dur, err,
                           dict(dep.attrs))
                end = t + dur
            elif callee.down:
                dur = (500 if callee.timeout else 1) * NS
                attrs: dict = {"server.address": "127.0.0.1", "server.port": PORTS[dep.callee]}
                if self.peer_service:
                    attrs["peer.service"] = dep.callee
                self._span(spans, tid, cid, sid, service, SpanKind.CLIENT, t, t + dur, True,
                           attrs)
                end, err = t + dur, True
            else:
                child_end, err = self._visit(dep.callee, tid, cid, t + NS // 5, spans)
                late = fault.reads_late_ms
                if fault.queue and late:
                    late = self.rng.expovariate(1.0 / late)
                end = child_end + NS // 5 + int(late * NS)
                attrs = {"peer.service": dep.callee} if self.peer_service else {
                    "server.address": "127.0.0.1", "server.port": PORTS[dep.callee]}
                self._span(spans, tid, cid, sid, service, SpanKind.CLIENT, t, end, err, attrs)
            t = end
            if err and not dep.optional:
                failed = True
        extra = fault.latency_ms
        if fault.queue and extra:
            extra = self.rng.expovariate(1.0 / extra)
        t += int((SELF_MS.get(service, 2.0) + extra) * NS)
        if self.rng.random() < fault.error_rate + self.noise.get(service, 0.0):
            failed = True
        self._span(spans, tid, sid, parent, service, SpanKind.SERVER, start, t, failed,
                   {"server.port": PORTS.get(service, 0)})
        return t, failed


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_service(t0: float, data_dir: object = None, baseline_s: float = 60.0,
                 incident_quiet_s: float = 30.0,
                 **options: float) -> tuple[CollectorService, Clock]:
    """A collector with the real graph (traffic appender) and diagnosis installed; ``options``
    are further diagnosis options (``recent_window_s=0``...)."""
    from collector import diagnosis, graph

    clock = Clock(t0)
    config = CollectorConfig(data_dir=data_dir,  # type: ignore[arg-type]
                             diagnosis=DiagnosisConfig.from_options(
                                 {"baseline_s": baseline_s,
                                  "incident_quiet_s": incident_quiet_s, **options}))
    service = CollectorService(config=config, clock=clock)
    graph.install(service, config)
    diagnosis.install(service, config)
    return service, clock


def drive(service: CollectorService, clock: Clock, shop: Shop, seconds: int, rps: int = 5,
          evaluate: bool = True, ticks_per_s: int = 1) -> None:
    """Feed ``rps`` requests per simulated second for ``seconds``, advancing the clock; with
    ``evaluate``, ``ticks_per_s`` evaluation ticks in each second (the last at its end)."""
    for _ in range(seconds):
        start = clock.t
        for i in range(rps):
            service.ingest(shop.request(clock.t + i / rps), now=clock.t)
        for k in range(1, ticks_per_s + 1) if evaluate else ():
            clock.t = start + k / ticks_per_s
            service.parts["graph"].tick(clock.t)
            service.parts["diagnosis"].evaluate()
        clock.t = start + 1.0


def settle(service: CollectorService, clock: Clock, seconds: float = 2.0) -> None:
    """Let pending traces finish and pending halves expire, with no new traffic; the
    collector evaluates every second meanwhile, as it does live."""
    end = clock.t + seconds
    while clock.t < end:
        clock.t = min(end, clock.t + 1.0)
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()


def serve(service: CollectorService) -> contextlib.AbstractContextManager[str]:
    """The service's real HTTP app on a free loopback port, in a thread of this process (so
    its clock stays injectable); a context manager giving the base URL."""
    from collector import wiring

    return procs.serve(wiring.build_app(service))
