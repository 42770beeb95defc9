"""Reads never change state: the same spans under the same injected clock give the same
incident history whether nobody reads the API or 50 readers hammer every read endpoint
(graph, incidents, teams, team map, a service, /metrics) over real HTTP while the
evaluation ticks. The clock moves continuously, as a real one does (each request at its own
instant), and the evaluation runs on whole seconds. Before evaluation moved onto a clock,
each read ran trace finishing, health hysteresis, baseline marks and the incident lifecycle
at whatever instant it came, so readers changed what was concluded and when."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from diagnosis_sim import Clock, Fault, Shop, serve

from collector import wiring
from collector.config import CollectorConfig, DiagnosisConfig
from collector.service import CollectorService

T0 = 1_700_000_000.0
READ_PATHS = ("/api/graph", "/api/graph?window=300", "/api/incidents", "/api/teams",
              "/api/teammap", "/api/services/checkout", "/metrics",
              "/api/incidents?status=open")


def _read_loop(url: str, path: str, stop: threading.Event, done: list[int], i: int) -> None:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        while not stop.is_set():
            status = client.get(path).status_code
            # A service is unknown (404) until its first span arrives.
            assert status == 200 or (status == 404 and "/services/" in path), (path, status)
            done[i] += 1


def _drive(service: CollectorService, clock: Clock, shop: Shop, seconds: int,
           rps: int = 5) -> None:
    """Each request at its own instant; one evaluation tick per whole second."""
    for _ in range(seconds):
        start = clock.t
        for i in range(rps):
            clock.t = start + i / rps
            service.ingest(shop.request(clock.t), now=clock.t)
            time.sleep(0.01)  # real time passes between requests too: readers see it
        clock.t = start + 1.0
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()


def _history(readers: int) -> tuple[list[Any], list[int]]:
    clock = Clock(T0)
    config = CollectorConfig(diagnosis=DiagnosisConfig(
        baseline_s=60.0, incident_quiet_s=10.0,
        evaluate_interval_s=3600))  # the test runs each tick itself
    service = wiring.build_service(config, clock)
    done = [0] * readers
    with serve(service) as url:
        stop = threading.Event()
        threads = [threading.Thread(target=_read_loop,
                                    args=(url, READ_PATHS[i % len(READ_PATHS)], stop, done, i))
                   for i in range(readers)]
        for t in threads:
            t.start()
        try:
            shop = Shop()
            _drive(service, clock, shop, 70)
            shop.faults = {"payment": Fault(error_rate=0.5)}
            _drive(service, clock, shop, 15)
            shop.faults = {"shipping": Fault(latency_ms=300.0)}
            _drive(service, clock, shop, 15)
            shop.faults = {}
            _drive(service, clock, shop, 40)
        finally:
            stop.set()
            for t in threads:
                t.join()
    incidents = service.parts["diagnosis"].manager.incidents()
    history = sorted(
        (i.root_cause["service"], i.root_cause["kind"], i.started_at, i.status, i.resolved_at,
         [d["service"] for d in i.impacted],
         [(h["at"], h["event"], h["summary"]) for h in i.history])
        for i in incidents)
    return history, done


def test_fifty_concurrent_readers_change_no_incident() -> None:
    quiet, _ = _history(0)
    busy, reads = _history(50)
    # The fault campaign in the simulated shop opened and resolved incidents...
    assert {(h[0], h[1], h[3]) for h in quiet} >= {("payment", "errors", "resolved"),
                                                   ("shipping", "latency", "resolved")}
    # ...every reader really read, while the evaluation ticked...
    assert min(reads) >= 1, reads
    # ...and not one event of the history moved.
    assert busy == quiet
