"""The fault campaign's own view of what the services served (``bench/campaign.py``'s
``FeltWatcher`` figures): a real prometheus-client histogram, as the demo services register
it, exposed in the text format and read back between two scrapes; and its split of the time to
root cause at the demo's third faulted request, read from the services' ``/admin/faults``."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from demo_services.telemetry import LATENCY_BUCKETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def campaign() -> Iterator[ModuleType]:
    name = "conway_campaign"
    sys.path.insert(0, str(ROOT / "bench"))  # campaign imports its sibling modules
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "campaign.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(ROOT / "bench"))


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    hist = Histogram("http_server_request_duration_seconds", "Time to answer.",
                     ["method", "route", "status_code"], buckets=LATENCY_BUCKETS,
                     registry=registry)
    return registry, hist


def _scrape(campaign: ModuleType, registry: CollectorRegistry, t: float) -> object:
    return campaign.parse_sample(generate_latest(registry).decode(), t)


def test_the_requests_between_two_scrapes_summed_over_routes_and_codes(
        campaign: ModuleType) -> None:
    registry, hist = _histogram()
    for _ in range(50):  # before the first scrape: not counted
        hist.labels("GET", "/", "200").observe(0.5)
    first = _scrape(campaign, registry, 1.0)
    for _ in range(60):
        hist.labels("GET", "/", "200").observe(0.03)  # 25-50 ms
    for _ in range(30):
        hist.labels("GET", "/cart", "200").observe(0.07)  # 50-100 ms
    for _ in range(10):
        hist.labels("POST", "/checkout", "503").observe(0.2)  # 100-250 ms
    felt = campaign.felt_between(first, _scrape(campaign, registry, 2.0))
    assert felt.n == 100 and felt.errors == 10
    # rank 50 of 100 lies in 25-50 ms, which holds 60: 25 + 25 * 50/60 ms
    assert felt.p50_ms == pytest.approx(25 + 25 * 50 / 60, abs=0.1)
    # rank 95 in 100-250 ms (90 below it, 10 in it): 100 + 150 * 5/10 ms
    assert felt.p95_ms == pytest.approx(175.0, abs=0.1)


def test_a_restarted_process_counts_from_its_start(campaign: ModuleType) -> None:
    registry, hist = _histogram()
    for _ in range(100):
        hist.labels("GET", "/", "200").observe(0.003)
    first = _scrape(campaign, registry, 1.0)
    registry, hist = _histogram()  # the process came back: counters from zero
    for _ in range(20):
        hist.labels("GET", "/", "200").observe(0.4)  # 250-500 ms
    felt = campaign.felt_between(first, _scrape(campaign, registry, 2.0))
    assert felt.n == 20 and felt.errors == 0
    assert 250.0 < felt.p50_ms < felt.p95_ms <= 500.0


def test_nothing_served_and_the_inf_bucket(campaign: ModuleType) -> None:
    registry, hist = _histogram()
    hist.labels("GET", "/", "200").observe(0.001)
    first = _scrape(campaign, registry, 1.0)
    assert campaign.felt_between(first, _scrape(campaign, registry, 2.0)) is None
    for _ in range(10):
        hist.labels("GET", "/", "200").observe(30.0)  # above the last bound
    felt = campaign.felt_between(first, _scrape(campaign, registry, 3.0))
    assert felt.p50_ms == felt.p95_ms == 1000 * LATENCY_BUCKETS[-1]
    assert campaign.parse_sample("# no histogram here\nup 1\n", 4.0) is None


def test_slowed_needs_the_rise_in_both_periods(campaign: ModuleType) -> None:
    felt = {
        "frontend": {"p50_x": 1.2, "p95_x": 1.9},
        "cart": {"p50_x": 1.5, "p95_x": 1.1},
        "quote": {"p50_x": 1.0, "p95_x": 2.0},
        "email": {"before": None, "during": None},  # too few requests: no ratio
    }
    assert campaign.slowed_by_felt(felt) == ["cart", "quote"]


def _serve_evidence(bodies: dict[str, dict[str, Any]]) -> ThreadingHTTPServer:
    """A loopback HTTP server answering ``GET /<name>/admin/faults`` with ``bodies[name]``
    (unknown names: 503, as a service that is down or busy)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            name = self.path.strip("/").split("/")[0]
            body = bodies.get(name)
            data = json.dumps(body).encode() if body is not None else b"{}"
            self.send_response(200 if body is not None else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_evidence_is_merged_over_processes_from_the_injection_on(campaign: ModuleType) -> None:
    """A database's (or a down service's) faulted calls are recorded by each caller: the third
    overall is the third of all their first requests merged; records from before the injection
    and processes that do not answer add nothing."""
    server = _serve_evidence({
        "checkout": {"evidence": {"orders": {"first": [9.0, 10.5, 12.0], "count": 3}}},
        "cart": {"evidence": {"orders": {"first": [10.2, 11.0], "count": 2},
                              "redis": {"first": [10.1], "count": 1}}},
        "email": {"fault": {}},  # no evidence at all
    })
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = {n: f"{base}/{n}" for n in ("checkout", "cart", "email", "payment")}
        got = campaign.fault_evidence(urls, since=10.0)
    finally:
        server.shutdown()
        server.server_close()
    assert got == {"orders": [10.2, 10.5, 11.0, 12.0], "redis": [10.1]}


def test_time_to_root_cause_is_split_at_the_third_faulted_request(campaign: ModuleType) -> None:
    shop = campaign.load_shop()
    camp = SimpleNamespace(shop=shop)
    fault = campaign.one("errors", "payment", campaign.ERRORS, "errors")
    out = campaign.Outcome(1, fault.kind, list(fault.targets), fault.label(),
                           injected_at=100.0, held_until=120.0)
    out.evidence = {"payment": [0.4, 0.9, 1.3, 1.6]}
    inc = campaign.Seen("i1", "payment", "errors", shop.team("payment"), "", first_seen=102.0)
    campaign.score_targets(camp, fault, out, [inc])
    assert out.ttrc_s == pytest.approx(2.0)
    assert out.evidence_s == pytest.approx(1.3) and out.after_evidence_s == pytest.approx(0.7)
    assert "faulted request #3 at 1.30 s, named 0.70 s after it" in campaign.fault_line(out, 1)
    # Fewer than three faulted requests recorded: the split is unknown, and said so.
    out = campaign.Outcome(1, fault.kind, list(fault.targets), fault.label(),
                           injected_at=100.0, held_until=120.0)
    out.evidence = {"payment": [0.4, 0.9]}
    campaign.score_targets(camp, fault, out, [inc])
    assert out.ttrc_s == pytest.approx(2.0) and out.evidence_s is None
    assert out.after_evidence_s is None
    assert "the demo recorded fewer than 3 faulted requests (payment 2)" in campaign.fault_line(
        out, 1)
    # Two at once: each target's own split, the worst of each.
    fault = campaign.Fault("two-at-once", (
        campaign.Injection("payment", campaign.ERRORS, "errors"),
        campaign.Injection("quote", campaign.LATENCY, "latency")))
    out = campaign.Outcome(1, fault.kind, list(fault.targets), fault.label(),
                           injected_at=100.0, held_until=120.0)
    out.evidence = {"payment": [0.1, 0.2, 0.3], "quote": [0.5, 1.0, 2.5]}
    quote = campaign.Seen("i2", "quote", "latency", shop.team("quote"), "", first_seen=103.0)
    campaign.score_targets(camp, fault, out, [inc, quote])
    assert out.ttrc_s == pytest.approx(3.0) and out.evidence_s == pytest.approx(2.5)
    assert out.after_evidence_s == pytest.approx(1.7)  # payment: 2.0 - 0.3
