"""The demo shop's ``--mesh``: each service exposes the series its mesh's sidecar would
(https://istio.io/latest/docs/reference/config/metrics/ for Istio,
https://linkerd.io/2/reference/proxy-metrics/ for Linkerd), a real Prometheus scrapes them, and
the collector (``--mesh-prometheus``) shows ``quote`` — which sends no traces — as a coverage
gap joined with the traced calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_harness import free_port_block, start_shop
from procs import Proc, free_port
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.topology import service_ports
from demo_services.mesh import ISTIO_LABELS, Sidecar

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = Path("/usr/bin/prometheus")
PYTHON = str(REPO / ".venv" / "bin" / "python")


def test_linkerd_sidecar_exposition_names_and_labels() -> None:
    registry = CollectorRegistry()
    car = Sidecar("linkerd", "books", registry)
    car.outbound("authors", 500, "500", 12.0)
    car.outbound("authors", None, "connection_refused", 1.0)
    car.inbound(None, 200, 5.0)
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    assert families["response"].type == "counter"
    assert families["response_latency_ms"].type == "histogram"
    out = [s for s in families["response"].samples if s.name == "response_total"
           and s.labels["direction"] == "outbound"]
    assert {s.labels["classification"] for s in out} == {"failure"}
    assert {s.labels["dst_deployment"] for s in out} == {"authors-v1"}
    assert all(s.labels["deployment"] == "books-v1" for s in out)
    buckets = [s for s in families["response_latency_ms"].samples
               if s.name == "response_latency_ms_bucket"]
    assert buckets and "classification" not in buckets[0].labels


def test_istio_sidecar_labels_are_istios() -> None:
    registry = CollectorRegistry()
    car = Sidecar("istio", "shipping", registry)
    car.outbound("quote", None, "connection_refused", 1.0)
    sample = next(s for f in text_string_to_metric_families(generate_latest(registry).decode())
                  for s in f.samples if s.name == "istio_requests_total")
    assert set(sample.labels) == set(ISTIO_LABELS)
    assert sample.labels["reporter"] == "source"
    assert sample.labels["response_flags"] == "UF"
    assert sample.labels["response_code"] == "503"
    assert sample.labels["destination_app"] == "quote"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.mark.skipif(not PROMETHEUS.exists(), reason=f"{PROMETHEUS} not installed")
def test_shop_with_istio_shows_the_untraced_quote(procs: list[Proc], tmp_path: Path) -> None:
    count = len(service_ports(REPO / "catalog" / "topology.yaml"))
    base = free_port_block(count)
    prom_port, col_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    targets = ", ".join(f"'127.0.0.1:{base + i}'" for i in range(count))
    # A 2 s scrape with a 2 s timeout: frontend's /metrics (inbound and outbound series for six
    # callees) can take over a second on a busy host, and a timed-out scrape drops its series.
    config.write_text("global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
                      "scrape_configs:\n  - job_name: shop\n"
                      f"    static_configs: [{{targets: [{targets}]}}]\n")
    prom = Proc([str(PROMETHEUS), f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                tmp_path / "prometheus.log")
    procs.append(prom)
    prom_url = f"http://127.0.0.1:{prom_port}"
    col = Proc([PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port", str(col_port),
                "--catalog", str(REPO / "catalog" / "catalog-info.yaml"),
                "--mesh-prometheus", prom_url, "--mesh-poll", "1", "--mesh-window", "20"],
               tmp_path / "collector.log")
    procs.append(col)
    url = f"http://127.0.0.1:{col_port}"
    col.wait_http(url + "/healthz")
    prom.wait_http(prom_url + "/-/ready")
    shop = start_shop(tmp_path, url, extra=["--mesh", "istio", "--untraced", "quote",
                                            "--rate", "4"], base=base)
    try:
        metrics = httpx.get(f"http://127.0.0.1:{base}/metrics", timeout=5).text
        assert "istio_requests_total" in metrics
        deadline = time.monotonic() + 60
        last: Any = None
        while time.monotonic() < deadline:
            g = httpx.get(url + "/api/graph", params={"window": 60}, timeout=5).json()
            nodes = {n["id"]: n for n in g["nodes"]}
            edges = {(e["source"], e["target"]): e for e in g["edges"]}
            quote, sq = nodes.get("quote"), edges.get(("shipping", "quote"))
            last = (quote, sq, edges.get(("unknown", "frontend")))
            # shipping's CLIENT spans to quote have no server half: they join the graph once
            # pairing gives up on it, after the mesh has seen the calls.
            # The load generator has no sidecar: its calls come from "unknown", read from
            # frontend's own (destination) series.
            # shipping's own (source) series need two scrapes in the window before they count.
            if quote and sq and quote.get("no_traces") and "mesh" in sq and sq.get("traced") \
                    and sq["mesh"].get("reporter") == "source" \
                    and nodes.get("frontend", {}).get("traced") \
                    and ("unknown", "frontend") in edges:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"quote not shown as a coverage gap: {last}\n{shop.log}")
        assert sq["mesh"]["reporter"] == "source"
        assert sq["calls"] > 0  # shipping's CLIENT spans saw the calls too: one edge
        assert nodes["quote"]["traced"] is False
        assert nodes["checkout"]["no_traces"] is False
        assert edges[("unknown", "frontend")]["mesh"]["reporter"] == "destination"
    finally:
        shop.stop()
