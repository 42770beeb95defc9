"""The real collector process with the demo catalog: spans in over OTLP from the OpenTelemetry
SDK, teams, owners and the orphan out of the HTTP API."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from ownership_helpers import DEMO_CATALOG
from procs import free_port

from collector.config import CollectorConfig

REPO = Path(__file__).parents[3]
START_TIMEOUT_S = 60.0  # a failure guard on a shared 2-core machine, not a speed assertion


def _ownership_wired() -> bool:
    from collector.wiring import build_service

    return "ownership" in build_service(CollectorConfig()).parts


pytestmark = pytest.mark.skipif(
    not _ownership_wired(), reason="collector.wiring does not call collector.ownership.install"
)


@pytest.fixture
def collector() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "--host", "127.0.0.1", "--port", str(port),
         "--catalog", str(DEMO_CATALOG)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"collector exited: {proc.communicate()[1].decode()}")
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("collector did not answer /healthz")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _provider(service: str, url: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create(
        {"service.name": service, "service.namespace": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    return provider


def _call(url: str, client: str, server: str) -> None:
    """One paired call ``client -> server``, as two services' SDKs export it."""
    caller, callee = _provider(client, url), _provider(server, url)
    try:
        with caller.get_tracer("test").start_as_current_span(
            f"GET /{server}", kind=trace.SpanKind.CLIENT, attributes={"peer.service": server}
        ):
            with callee.get_tracer("test").start_as_current_span(
                "GET /", kind=trace.SpanKind.SERVER
            ):
                pass
    finally:
        caller.shutdown()
        callee.shutdown()


def test_demo_catalog_teams_owners_and_the_orphan_over_http(collector: str) -> None:
    _call(collector, "shipping", "quote")
    _call(collector, "checkout", "shipping")
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:  # the call is paired when both halves arrive; wait until it shows
        body = httpx.get(f"{collector}/api/teams").json()
        if body["orphans"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    teams = {t["name"]: t for t in body["teams"]}
    assert set(teams) == {"web", "discovery", "orders", "payments", "comms"}
    assert teams["orders"]["services"] == ["cart", "checkout", "shipping"]
    assert body["orphans"] == ["quote"]
    assert body["catalog"]["errors"] == []

    quote = httpx.get(f"{collector}/api/services/quote").json()
    assert (quote["team"], quote["owner"]) == (None, None)
    shipping = httpx.get(f"{collector}/api/services/shipping").json()
    assert shipping["team"] == "orders"
    assert shipping["owner"]["on_call"] == "bob (PagerDuty: PORD001)"
    assert shipping["owner"]["source"] == "catalog"

    orders = httpx.get(f"{collector}/api/teams/orders").json()
    assert {"source": "shipping", "target": "quote"} == {
        k: orders["edges_out"][0][k] for k in ("source", "target")}
    teammap = httpx.get(f"{collector}/api/teammap").json()
    assert {n["id"] for n in teammap["nodes"]} == {"orders", "(orphans)"}


def test_invalid_catalog_at_startup_exits_with_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "catalog-info.yaml"
    bad.write_text(DEMO_CATALOG.read_text().replace("owner: payments", "owner: paymnts", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "collector", "--host", "127.0.0.1", "--port", str(free_port()),
         "--catalog", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "group:default/paymnts does not exist" in proc.stderr
    assert "spec.owner" in proc.stderr
