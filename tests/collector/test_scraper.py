"""The scraper against a real prometheus_client HTTP server on a free port, and a closed port."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Info, start_http_server

from collector.scraper import Scraper, parse_metrics, topology_targets
from collector.topology import TopologyError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics_server() -> Iterator[str]:
    registry = CollectorRegistry()
    c = Counter("http_server_requests", "requests", ["status"], registry=registry)
    c.labels("200").inc(40)
    c.labels("503").inc(2)
    Info("target", "target info", registry=registry).info({"service_name": "cart"})
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_up_target_reports_counts_and_service(metrics_server: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/metrics"
    scraper = Scraper([metrics_server, closed], clock=lambda: 123.0)
    asyncio.run(scraper.scrape_once())
    up, down = scraper.targets()
    assert up.up is True and up.service == "cart"
    assert up.requests_total == 42 and up.errors_total == 2
    assert up.last_scrape == 123.0 and up.last_error is None
    assert down.up is False and down.failures == 1 and down.last_error
    assert scraper.failures == 1
    assert scraper.up_by_service() == {"cart": True, down.service: False}
    asyncio.run(scraper.scrape_once())
    assert down.failures == 2 and up.failures == 0


def test_a_scrape_that_times_out_is_told_apart_from_a_refused_one() -> None:
    # A listener that accepts and never answers: a starved or hung process, not a gone one.
    # Both are up=False (as Prometheus has it); only the timeout is in timed_out_services.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
        closed = f"http://127.0.0.1:{free_port()}/metrics"
        scraper = Scraper([hung, closed], clock=lambda: 1.0)
        asyncio.run(scraper.scrape_once())
        slow, gone = scraper.targets()
        assert slow.up is False and gone.up is False
        assert "Timeout" in (slow.last_error or "")
        assert scraper.timed_out_services() == {slow.service}
    finally:
        silent.close()


def test_a_refused_scrape_after_an_answered_one_is_a_process_gone() -> None:
    # Refused after answering: gone. Refused and never answered: still starting, not gone.
    registry = CollectorRegistry()
    Counter("http_server_requests", "requests", ["status"], registry=registry).labels("200").inc()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    went = f"http://127.0.0.1:{port}/metrics"
    never = f"http://127.0.0.1:{free_port()}/metrics"
    scraper = Scraper([went, never], clock=lambda: 1.0)
    asyncio.run(scraper.scrape_once())
    assert scraper.refused_services() == set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    asyncio.run(scraper.scrape_once())
    gone, starting = scraper.targets()
    assert gone.up is False and gone.refused and gone.was_up
    assert starting.up is False and starting.refused and not starting.was_up
    assert scraper.refused_services() == {gone.service}


def test_topology_names_targets(tmp_path: Path, metrics_server: str) -> None:
    port = int(metrics_server.split(":")[2].split("/")[0])
    topo = tmp_path / "topology.yaml"
    topo.write_text(f"services:\n  frontend: {{port: {port}}}\n")
    named = topology_targets(topo)
    assert named == {"frontend": metrics_server}
    scraper = Scraper(named=named)
    asyncio.run(scraper.scrape_once())
    # The configured name wins over the target_info label.
    assert scraper.up_by_service() == {"frontend": True}


def test_topology_host_template_names_containers(tmp_path: Path) -> None:
    topo = tmp_path / "topology.yaml"
    topo.write_text("services:\n  payment: {port: 8109}\n  cart: {port: 8106}\n")
    assert topology_targets(topo, "{service}") == {
        "payment": "http://payment:8109/metrics", "cart": "http://cart:8106/metrics"}
    assert topology_targets(topo, "{service}.shop.svc")["cart"] == (
        "http://cart.shop.svc:8106/metrics")


def test_topology_errors_say_what_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("nodes: []\n")
    with pytest.raises(TopologyError, match="services:"):
        topology_targets(bad)
    with pytest.raises(TopologyError, match="cannot read"):
        topology_targets(tmp_path / "missing.yaml")


def test_parse_without_request_metric() -> None:
    assert parse_metrics("# TYPE x gauge\nx{service=\"ad\"} 1\n")[:3] == (None, None, "ad")


def test_cpu_use_gives_rates_between_scrapes_and_restarts_at_a_reset() -> None:
    # A real exposition server whose CPU, CPU-wait and request counters this test moves.
    registry = CollectorRegistry()
    cpu = Counter("process_cpu_seconds", "cpu", registry=registry)
    wait = Counter("process_cpu_wait_seconds", "wait", registry=registry)
    reqs = Counter("http_server_requests", "requests", ["status"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    now = [100.0]
    try:
        scraper = Scraper(named={"cart": f"http://127.0.0.1:{port}/metrics"},
                          clock=lambda: now[0])
        for _ in range(5):  # one scrape a second: 0.2 s CPU, 0.5 s waiting, 10 requests
            asyncio.run(scraper.scrape_once())
            cpu.inc(0.2)
            wait.inc(0.5)
            reqs.labels("200").inc(10)
            now[0] += 1.0
        use = scraper.cpu_use("cart", 100.0, 104.0)
        assert use is not None and use.seconds == 4.0
        assert (round(use.cpu, 6), round(use.wait, 6), use.requests) == (0.2, 0.5, 10.0)
        assert scraper.cpu_use("cart", 103.5, 104.0) is None  # one scrape: no rate
        assert scraper.cpu_use("nobody", 100.0, 104.0) is None
        # The process restarts: its counters start again from zero.
        cpu._value.set(0.05)  # noqa: SLF001 (a restart, as a new process would expose it)
        wait._value.set(0.1)  # noqa: SLF001
        for _ in range(3):
            asyncio.run(scraper.scrape_once())
            cpu.inc(0.1)
            wait.inc(0.1)
            reqs.labels("200").inc(1)
            now[0] += 1.0
        after = scraper.cpu_use("cart", 100.0, now[0])
        assert after is not None and after.seconds == 2.0
        assert round(after.cpu, 6) == 0.1 and round(after.wait, 6) == 0.1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_targets_without_cpu_families_have_no_cpu_use(metrics_server: str) -> None:
    scraper = Scraper([metrics_server], clock=lambda: 1.0)
    for _ in range(3):
        asyncio.run(scraper.scrape_once())
    assert scraper.targets()[0].cpu == deque() and scraper.cpu_use("cart", 0, 10) is None
