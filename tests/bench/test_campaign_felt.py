"""The fault campaign's own view of what the services served (``bench/campaign.py``'s
``FeltWatcher`` figures): a real prometheus-client histogram, as the demo services register
it, exposed in the text format and read back between two scrapes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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
