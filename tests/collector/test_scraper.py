"""The scraper against a real prometheus_client HTTP server on a free port, and a closed port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Info, start_http_server

from collector.scraper import Scraper, TopologyError, parse_metrics, topology_targets


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
    assert parse_metrics("# TYPE x gauge\nx{service=\"ad\"} 1\n") == (None, None, "ad")
