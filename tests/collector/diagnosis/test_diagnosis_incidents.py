"""Incident lifecycle, who to page, what changed, persistence across restarts, and the API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from diagnosis_sim import Fault, Shop, drive, make_service, settle
from starlette.applications import Starlette

from collector.diagnosis.incidents import IncidentStore
from collector.model import Node, Snapshot
from collector.service import CollectorService

T0 = 1_700_000_000.0
PAYMENTS = {"team": "payments", "display_name": "Payments", "on_call": "@pay-oncall",
            "channel": "#payments", "runbook": "https://runbooks.example/payments",
            "source": "catalog"}


class Ownership:
    """Stands in for the ownership concern's published part (only ``owner_of`` is read)."""

    def owner_of(self, service: str) -> dict[str, Any] | None:
        return dict(PAYMENTS) if service in ("payment", "fraud-detection") else None


def incidents(service: CollectorService, status: str | None = None) -> list[dict[str, Any]]:
    return [i.to_json() for i in service.parts["diagnosis"].manager.incidents(status)]


def test_incident_opens_names_who_to_page_and_what_changed_then_resolves() -> None:
    service, clock = make_service(T0)
    service.parts["ownership"] = Ownership()
    shop = Shop()
    drive(service, clock, shop, 80, evaluate=True)
    assert incidents(service) == []

    shop.versions["payment"] = "1.1.0"  # a deploy, then the failure
    shop.faults = {"payment": Fault(error_rate=0.5)}
    drive(service, clock, shop, 20, evaluate=True)
    (inc,) = incidents(service)
    assert inc["status"] == "open" and inc["resolved_at"] is None
    assert inc["root_cause"]["service"] == "payment" and inc["root_cause"]["kind"] == "errors"
    assert inc["root_cause"]["team"] == "payments"
    assert inc["page"] == {"team": "payments", "on_call": "@pay-oncall", "channel": "#payments",
                           "runbook": "https://runbooks.example/payments"}
    assert {d["service"] for d in inc["impacted"]} == {"checkout", "frontend"}
    assert inc["version_change"]["from"] == "1.0.0" and inc["version_change"]["to"] == "1.1.0"
    assert 0.5 <= inc["confidence"] <= 1.0
    assert inc["updated_at"] > inc["started_at"]

    shop.faults = {}
    drive(service, clock, shop, 30, evaluate=True)
    assert incidents(service)[0]["status"] == "open"  # not yet: the quiet period runs
    drive(service, clock, shop, 30, evaluate=True)
    (inc,) = incidents(service)
    assert inc["status"] == "resolved" and inc["resolved_at"] is not None
    assert [h["event"] for h in inc["history"]][0] == "opened"
    assert inc["history"][-1]["event"] == "resolved"


def test_without_ownership_the_page_fields_are_null() -> None:
    service, clock = make_service(T0)
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"quote": Fault(latency_ms=400)}
    drive(service, clock, shop, 20)
    settle(service, clock)
    service.parts["diagnosis"].evaluate()
    (inc,) = incidents(service)
    assert inc["root_cause"]["kind"] == "latency"
    assert inc["page"] == {"team": None, "on_call": None, "channel": None, "runbook": None}
    assert inc["version_change"] is None


def test_incidents_survive_a_restart(tmp_path: Path) -> None:
    service, clock = make_service(T0, data_dir=tmp_path)
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"fraud-detection": Fault(error_rate=0.6)}
    drive(service, clock, shop, 20, evaluate=True)
    (before,) = incidents(service)
    service.parts["diagnosis"].manager.store.close()
    assert (tmp_path / "incidents.sqlite3").exists()

    # A new collector on the same data dir: the incident is still open, with its history.
    again, clock2 = make_service(clock.t + 5, data_dir=tmp_path)
    (after,) = incidents(again)
    assert after["id"] == before["id"] and after["status"] == "open"
    assert after["root_cause"] == before["root_cause"]
    assert after["history"][0]["event"] == "opened"
    # The fault is still there: found again within the grace period (no baseline yet, but a
    # 60 % failure is clear), the same incident carries on rather than a second one.
    shop2 = Shop(seed=11, faults={"fraud-detection": Fault(error_rate=0.6)})
    drive(again, clock2, shop2, 20, evaluate=True)
    assert [i["id"] for i in incidents(again)] == [before["id"]]
    again.parts["diagnosis"].manager.store.close()


def test_store_reloads_from_the_same_sqlite_file(tmp_path: Path) -> None:
    service, clock = make_service(T0, data_dir=tmp_path)
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"ad": Fault(error_rate=1.0)}
    drive(service, clock, shop, 20, evaluate=True)
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    (loaded,) = store.load()
    assert loaded.root_cause["service"] == "ad" and loaded.status == "open"
    store.close()
    service.parts["diagnosis"].manager.store.close()


def test_api_shape_filter_and_bad_status() -> None:
    service, clock = make_service(T0)
    service.parts["ownership"] = Ownership()
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"payment": Fault(down=True), "redis": Fault(latency_ms=300)}
    drive(service, clock, shop, 20)
    settle(service, clock)

    async def scenario() -> None:
        for start in service.on_startup:  # the background lifecycle task runs meanwhile
            await start()
        transport = httpx.ASGITransport(app=Starlette(routes=service.routes))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://conway") as client:
                await check(client)
        finally:
            for stop in reversed(service.on_shutdown):
                await stop()

    async def check(client: httpx.AsyncClient) -> None:
        body = (await client.get("/api/incidents")).json()
        listed = body["incidents"]
        assert sorted((i["root_cause"]["service"], i["root_cause"]["kind"]) for i in listed) == [
            ("payment", "down"), ("redis", "latency")]
        for inc in listed:
            assert set(inc) >= {"id", "status", "started_at", "updated_at", "resolved_at",
                                "root_cause", "impacted", "page", "confidence",
                                "version_change"}
            assert set(inc["root_cause"]) == {"service", "team", "kind", "evidence"}
            assert set(inc["root_cause"]["evidence"]) == {"summary", "trace_ids", "counts",
                                                          "before", "after"}
            assert set(inc["page"]) == {"team", "on_call", "channel", "runbook"}
            # The contract's keys, and the evidence a person can check (issue 12).
            assert all(set(d) == {"service", "team", "how", "requests", "affected",
                                  "explained", "share", "trace_ids", "summary"}
                       for d in inc["impacted"])
        starts = [i["started_at"] for i in listed]
        assert starts == sorted(starts, reverse=True)
        by = {i["root_cause"]["service"]: i for i in listed}
        assert by["payment"]["page"]["on_call"] == "@pay-oncall"
        assert (await client.get("/api/incidents?status=open")).json()["incidents"] == listed
        assert (await client.get("/api/incidents?status=resolved")).json() == {"incidents": []}
        bad = await client.get("/api/incidents?status=closed")
        assert bad.status_code == 400 and "status=open" in bad.json()["error"]

    asyncio.run(scenario())
    snap = service.snapshot()
    assert {i["root_cause"]["service"] for i in snap.meta["incidents"]} == {"payment", "redis"}
    assert "payment" in snap.nodes["checkout"].meta["impacted_by"]


def test_a_data_dir_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "incidents.sqlite3"
    bad.write_bytes(b"this is not an sqlite file, just some text that happens to be here" * 20)
    try:
        IncidentStore(bad)
    except ValueError as exc:
        assert "--data-dir" in str(exc) and str(bad) in str(exc)
    else:
        raise AssertionError("a corrupt incident store was accepted")


class _Scrape:
    """What the scraper says of ``up`` (the graph's scraper is not installed here)."""

    name = "scrape"

    def __init__(self) -> None:
        self.down: set[str] = set()

    def append(self, snap: Snapshot) -> None:
        for name, node in snap.nodes.items():
            if node.kind == "service":
                node.meta["up"] = name not in self.down


def test_a_fault_that_changes_kind_stays_one_incident_with_the_most_severe_kind() -> None:
    # A process that was down leaves refused calls in the window after it is back, which
    # read as errors at it: still the same fault, the same team to page.
    service, clock = make_service(T0)
    scrape = _Scrape()
    service.appenders.insert(1, scrape)
    shop = Shop()
    drive(service, clock, shop, 80, evaluate=True)
    shop.faults = {"payment": Fault(down=True)}
    scrape.down = {"payment"}
    drive(service, clock, shop, 12, evaluate=True)
    assert [i["root_cause"]["kind"] for i in incidents(service, "open")] == ["down"]
    shop.faults, scrape.down = {}, set()
    drive(service, clock, shop, 12, evaluate=True)
    (inc,) = incidents(service)
    assert inc["root_cause"]["service"] == "payment" and inc["root_cause"]["kind"] == "down"


class _GhostNode:
    """Adds a service the scrape reports down but that never served anything."""

    name = "ghost"

    def append(self, snap: Snapshot) -> None:
        snap.nodes["ghost"] = Node("ghost", "service", meta={"up": False, "calls": 0})


def test_a_service_never_seen_serving_opens_no_down_incident() -> None:
    # At start-up the scrape reaches services before they listen: they have not *become*
    # down, and paging every team for it would be a false alarm.
    service, clock = make_service(T0)
    service.appenders.insert(1, _GhostNode())
    drive(service, clock, Shop(), 40, evaluate=True)
    assert incidents(service) == []
    assert service.snapshot().nodes["ghost"].health == "down"


def test_a_root_cause_now_impacted_by_another_moves_the_verdict_at_once() -> None:
    from collector.diagnosis.assessment import BY_TRACES, ERRORS, Impact, RootCause
    from collector.diagnosis.incidents import IncidentManager

    def cause(name: str, impacted: tuple[str, ...] = ()) -> RootCause:
        return RootCause(name, ERRORS, None, False, 0.8, {"summary": f"{name} fails"},
                         tuple(Impact(v, None, BY_TRACES, 10, 5, 5, (), f"{v} hurt")
                               for v in impacted))

    manager = IncidentManager(IncidentStore(), quiet_s=30.0)
    manager.evaluate([cause("checkout")], T0)  # checkout's errors, before payment's spans
    manager.evaluate([cause("payment", ("checkout", "frontend"))], T0 + 1)
    by = {i.key: i for i in manager.incidents()}
    assert by["payment"].status == "open"
    # A verdict that flips for a tick must not page twice: not yet.
    assert by["checkout"].status == "open"
    manager.evaluate([cause("payment", ("checkout", "frontend"))], T0 + 3)
    old = {i.key: i for i in manager.incidents()}["checkout"]
    # Resolved 3 s after checkout was last named, not after the 30 s quiet period, saying
    # where the verdict went.
    assert old.status == "resolved" and old.resolved_at == T0 + 3
    assert old.history[-1]["event"] == "moved"
    assert "verdict moved to payment" in old.history[-1]["summary"]
    # A root cause that merely went quiet still waits for the quiet period.
    manager.evaluate([cause("cart")], T0 + 3)
    manager.evaluate([], T0 + 10)
    assert {i.key: i.status for i in manager.incidents()}["cart"] == "open"


def test_an_incident_keeps_the_graph_it_opened_with_across_a_restart(tmp_path: Path) -> None:
    service, clock = make_service(T0, data_dir=tmp_path)
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"payment": Fault(error_rate=0.5)}
    drive(service, clock, shop, 20, evaluate=True)
    manager = service.parts["diagnosis"].manager
    (inc,) = manager.incidents()
    detail = manager.detail_json(inc.id)
    graph = detail["graph"]
    roles = {n["id"]: n["role"] for n in graph["nodes"]}
    assert roles["payment"] == "root"
    assert {"checkout", "frontend"} <= {k for k, v in roles.items() if v == "impacted"}
    calls = {(e["source"], e["target"]): e for e in graph["edges"]}
    # The failing call at its worst while the incident was open (a 60 s window: ~half of
    # its calls in the last 20 s failed).
    assert calls[("checkout", "payment")]["error_ratio"] > 0.1
    assert ("frontend", "checkout") in calls
    payment = next(n for n in graph["nodes"] if n["id"] == "payment")
    assert payment["health"] in ("failing", "degraded") and payment["rate_rps"] > 0
    assert graph["captured_at"] <= graph["updated_at"] <= clock.t

    # The incident resolves; later traffic (healthy again) does not touch its graph.
    shop.faults = {}
    drive(service, clock, shop, 60, evaluate=True)
    assert manager.incidents()[0].status == "resolved"
    graph = manager.detail_json(inc.id)["graph"]
    assert {(e["source"], e["target"]): e for e in graph["edges"]}[
        ("checkout", "payment")]["error_ratio"] > 0.1
    drive(service, clock, shop, 30, evaluate=True)
    assert manager.detail_json(inc.id)["graph"] == graph
    manager.store.close()
    # Traffic forgotten (a new collector, nothing ingested): the stored graph is unchanged.
    again, _ = make_service(clock.t + 600, data_dir=tmp_path)
    stored = again.parts["diagnosis"].manager.detail_json(inc.id)
    assert stored["graph"] == graph
    assert again.parts["diagnosis"].manager.detail_json("no-such-id") is None
    again.parts["diagnosis"].manager.store.close()


def test_the_detail_api_serves_the_whole_history_and_404s_an_unknown_id() -> None:
    service, clock = make_service(T0)
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"payment": Fault(error_rate=0.5)}
    drive(service, clock, shop, 20, evaluate=True)
    manager = service.parts["diagnosis"].manager
    (inc,) = manager.incidents()
    assert manager.note(inc.id, "paged", "paged payments through http://am:9093", clock.t)
    assert not manager.note("gone", "paged", "nobody", clock.t)
    app = Starlette(routes=service.routes)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    body = asyncio.run(get(f"/api/incidents/{inc.id}")).json()
    assert body["id"] == inc.id and body["graph"]["nodes"]
    assert [e["event"] for e in body["history"]][0] == "opened"
    assert body["history"][-1] == {"at": clock.t, "event": "paged",
                                   "summary": "paged payments through http://am:9093"}
    missing = asyncio.run(get("/api/incidents/nope"))
    assert missing.status_code == 404 and "no incident 'nope'" in missing.json()["error"]
