"""The ownership routes through a real Starlette app over the service's snapshot pipeline.

Traffic comes from a stand-in traffic appender that copies a fixed demo snapshot: the
ownership appender and routes under test run for real after it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from ownership_helpers import DEMO_CATALOG, demo_snapshot, span
from procs import serve
from starlette.applications import Starlette

from collector.config import CollectorConfig
from collector.model import Snapshot
from collector.ownership import install
from collector.service import CollectorService


class FixedTraffic:
    """Stands in for the graph helper's traffic appender: the demo's nodes and edges."""

    name = "traffic"

    def append(self, snap: Snapshot) -> None:
        demo = demo_snapshot(snap.window_s)
        snap.nodes.update(demo.nodes)
        snap.edges.update(demo.edges)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog-info.yaml"
    shutil.copy(DEMO_CATALOG, path)
    return path


@pytest.fixture
def service(catalog: Path) -> CollectorService:
    svc = CollectorService(CollectorConfig(catalog=catalog), clock=lambda: 5000.0)
    svc.appenders.append(FixedTraffic())
    install(svc, svc.config)
    return svc


@pytest.fixture
def client(service: CollectorService) -> Iterator[httpx.Client]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for start in service.on_startup:
            await start()
        yield
        for stop in service.on_shutdown:
            await stop()

    with serve(Starlette(routes=service.routes, lifespan=lifespan)) as url:
        with httpx.Client(base_url=url) as c:
            yield c


def test_teams_lists_every_team_with_contacts_and_the_orphan(
    client: httpx.Client, catalog: Path
) -> None:
    body = client.get("/api/teams").json()
    teams = {t["name"]: t for t in body["teams"]}
    assert set(teams) == {"web", "discovery", "orders", "payments", "comms"}
    assert teams["orders"] == {
        "name": "orders", "display_name": "Orders", "on_call": "bob (PagerDuty: PORD001)",
        "channel": "#team-orders", "runbook": "https://runbooks.shop.example/orders",
        "email": "orders@shop.example", "services": ["cart", "checkout", "shipping"],
        "resources": ["kafka: order-events", "orders", "redis"],  # the queue: its topic's
    }
    assert teams["discovery"]["on_call"] == "Opsgenie team discovery-oncall"
    assert body["orphans"] == ["quote"]
    assert body["catalog"] == {"path": str(catalog), "loaded_at": 5000.0, "entities": 25,
                               "errors": []}
    assert body["resource_attributes"]["dropped"] == 0


def test_team_detail_has_health_edges_and_drift(client: httpx.Client) -> None:
    body = client.get("/api/teams/ORDERS?window=30").json()
    assert body["name"] == "orders"
    assert body["services"] == [
        {"name": "cart", "health": "healthy", "source": "catalog"},
        {"name": "checkout", "health": "healthy", "source": "catalog"},
        {"name": "shipping", "health": "healthy", "source": "catalog"},
    ]
    out = {(e["source"], e["target"]): e for e in body["edges_out"]}
    assert set(out) == {("checkout", "currency"), ("checkout", "payment"),
                        ("kafka: order-events", "email"), ("shipping", "quote")}
    assert out[("shipping", "quote")] == {
        "source": "shipping", "target": "quote", "calls": 60, "rate_rps": 2.0,
        "error_ratio": 0.05, "p95_ms": 20.0, "health": "failing"}
    assert {(e["source"], e["target"]) for e in body["edges_in"]} == {
        ("frontend", "cart"), ("frontend", "checkout")}
    assert ("checkout", "orders") in {(e["source"], e["target"]) for e in body["edges_internal"]}
    assert body["drift"] == {"undeclared": [{"source": "cart", "target": "redis"}],
                             "unused": []}


def test_unknown_team_is_404_naming_the_known_ones(client: httpx.Client) -> None:
    resp = client.get("/api/teams/nobody")
    assert resp.status_code == 404
    assert resp.json()["error"] == (
        "unknown team 'nobody'; known teams: comms, discovery, orders, payments, web")


def test_bad_window_is_400(client: httpx.Client) -> None:
    for bad in ("abc", "0", "-5", "1e9", "nan"):
        resp = client.get(f"/api/teammap?window={bad}")
        assert resp.status_code == 400
        assert "window" in resp.json()["error"]


def test_teammap_groups_the_orphan(client: httpx.Client) -> None:
    body = client.get("/api/teammap?window=60").json()
    nodes = {n["id"]: n for n in body["nodes"]}
    assert set(nodes) == {"web", "discovery", "orders", "payments", "comms", "(orphans)"}
    assert nodes["(orphans)"]["services"] == ["quote"]
    assert nodes["(orphans)"]["health"] == "failing"
    assert nodes["orders"]["display_name"] == "Orders"
    assert nodes["orders"]["services"] == ["cart", "checkout", "kafka: order-events", "orders",
                                           "redis", "shipping"]
    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    assert edges[("orders", "(orphans)")]["errors"] == 3
    assert edges[("web", "orders")]["calls"] == 120  # frontend -> cart and -> checkout
    assert ("user", "web") not in edges


def test_owner_of_is_published_for_the_service_page(service: CollectorService) -> None:
    own = service.parts["ownership"]
    checkout = own.owner_of("checkout")
    assert checkout["channel"] == "#checkout-alerts"  # the component's own channel wins
    assert checkout["on_call"] == "bob (PagerDuty: PORD001)"  # the rest is the team's
    assert own.owner_of("orders")["team"] == "orders"  # the database Resource
    assert own.owner_of("quote") is None


def test_a_resource_attribute_names_the_orphans_team(
    client: httpx.Client, service: CollectorService
) -> None:
    service.ingest([span("quote", {"service.name": "quote", "team": "orders"})])
    body = client.get("/api/teams").json()
    assert body["orphans"] == []
    orders = next(t for t in body["teams"] if t["name"] == "orders")
    assert "quote" in orders["services"]
    detail = client.get("/api/teams/orders").json()
    assert {"name": "quote", "health": "failing", "source": "resource attribute"} in detail[
        "services"]


def test_invalid_edit_shows_in_teams_and_ownership_stays(
    client: httpx.Client, service: CollectorService, catalog: Path
) -> None:
    catalog.write_text(catalog.read_text().replace("owner: payments", "owner: paymnts", 1))
    assert service.parts["ownership"].reload() is False
    body = client.get("/api/teams").json()
    [err] = body["catalog"]["errors"]
    assert err["file"] == str(catalog) and err["field"] == "spec.owner"
    assert "group:default/paymnts does not exist" in err["message"]
    payments = next(t for t in body["teams"] if t["name"] == "payments")
    assert payments["services"] == ["currency", "fraud-detection", "payment"]
