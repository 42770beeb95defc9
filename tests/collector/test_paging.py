"""Paging: the alerts an incident stands for, delivered through a real Alertmanager routing by
team (the page to the root cause's team, ``info`` to the victims' teams), a moved verdict
resolving the old page, an Alertmanager that is down (kept, counted, delivered once it is
back), a webhook that fails for a while, and the bounded queues."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alerting import (
    Receiver,
    am_alerts,
    iter_labels,
    needs_alertmanager,
    routing_config,
    start_alertmanager,
    stop_process,
    wait_until,
)
from procs import free_port

from collector.paging import (
    IMPACT_ALERT,
    ROOT_ALERT,
    AlertmanagerSink,
    Pager,
    Sink,
    WebhookSink,
    alerts_for,
)

T0 = 1_796_000_000.0


def incident(inc_id: str, service: str, team: str | None, impacted: dict[str, str | None],
             kind: str = "errors") -> dict[str, Any]:
    """An open incident as ``/api/incidents`` serves it."""
    page = {"team": team, "on_call": f"PagerDuty {team}-oncall" if team else None,
            "channel": f"#team-{team}" if team else None,
            "runbook": f"https://runbooks.example/{team}" if team else None}
    return {"id": inc_id, "status": "open", "started_at": T0, "updated_at": T0,
            "root_cause": {"service": service, "team": team, "kind": kind,
                           "evidence": {"summary": f"{service}: 41 of 96 requests failed",
                                        "trace_ids": ["ab" * 16]}},
            "impacted": [{"service": s, "team": t, "summary": f"{s}: {service}'s error below"}
                         for s, t in impacted.items()],
            "page": page, "confidence": 0.9}


def test_an_incident_pages_its_root_cause_team_and_informs_the_victims() -> None:
    alerts = alerts_for(incident("i1", "payment", "payments",
                                 {"checkout": "orders", "frontend": "web"}),
                        "http://dash.example:8050")
    root, *victims = alerts
    assert dict(root.labels) == {"alertname": ROOT_ALERT, "service": "payment",
                                 "root_cause": "payment", "team": "payments",
                                 "severity": "page"}
    ann = root.annotations
    # Not labels: replicas' ids differ and their kinds may, an incident's kind escalates;
    # none of that may make a second page.
    assert (ann["incident"], ann["kind"]) == ("i1", "errors")
    assert ann["summary"] == "payment errors: page payments; impacted checkout, frontend"
    assert "41 of 96" in ann["description"] and "ab" * 16 in ann["description"]
    assert ann["runbook_url"] == "https://runbooks.example/payments"
    assert ann["dashboard_url"] == "http://dash.example:8050/services/payment"
    assert (ann["on_call"], ann["channel"]) == ("PagerDuty payments-oncall", "#team-payments")
    assert [(v.labels["alertname"], v.labels["service"], v.labels["team"],
             v.labels["severity"], v.labels["root_cause_team"]) for v in victims] == [
        (IMPACT_ALERT, "checkout", "orders", "info", "payments"),
        (IMPACT_ALERT, "frontend", "web", "info", "payments")]
    # Nobody owns the host: no team label (an empty label is no label), the fallback said.
    (host,) = alerts_for(incident("i2", "vm", None, {}, kind="shared-host"))
    assert "team" not in host.labels and host.annotations["owner"] == "no owner"


def drive(pager: Pager, now: float) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            await pager.flush(client, now)

    pager.tick(now)
    asyncio.run(go())


@needs_alertmanager
def test_alertmanager_routes_the_page_by_team_and_a_moved_verdict_resolves_it(
        tmp_path: Path) -> None:
    rec = Receiver()
    am, url = start_alertmanager(tmp_path, routing_config(rec.url, ("payments", "orders")))
    try:
        current: list[dict[str, Any]] = [incident("c1", "checkout", "orders",
                                                  {"frontend": "web"})]
        pager = Pager(lambda: current, [AlertmanagerSink(url)])
        t = time.time()
        wait_until("orders paged for checkout", lambda: rec.alerts_at("/page/orders"),
                   step=lambda: drive(pager, time.time()))
        (page,) = rec.alerts_at("/page/orders")
        assert page["status"] == "firing"
        assert (page["labels"]["alertname"], page["labels"]["service"],
                page["labels"]["severity"]) == (ROOT_ALERT, "checkout", "page")
        assert page["annotations"]["runbook_url"] == "https://runbooks.example/orders"
        # The victim's team hears of it in chat, never through its page route.
        wait_until("web told", lambda: rec.alerts_at("/chat"))
        assert {(a["labels"]["service"], a["labels"]["team"], a["labels"]["severity"])
                for a in rec.alerts_at("/chat")} == {("frontend", "web", "info")}
        assert rec.at("/default") == []

        # The verdict moves: checkout's errors were payment's (the incident manager resolved
        # checkout's incident); the page follows the evidence.
        current[:] = [incident("p1", "payment", "payments",
                               {"checkout": "orders", "frontend": "web"})]
        wait_until("payments paged", lambda: rec.alerts_at("/page/payments"),
                   step=lambda: drive(pager, time.time()))
        wait_until("checkout's page resolved",
                   lambda: any(a["status"] == "resolved"
                               for a in rec.alerts_at("/page/orders")),
                   step=lambda: drive(pager, time.time()))
        assert {lab for lab in iter_labels(rec.alerts_at("/page/payments"))} == {
            (ROOT_ALERT, "payment", "page", "firing")}
        # Orders now hears of payment's incident as a victim, in chat, not paged again.
        wait_until("orders told as a victim", lambda: any(
            a["labels"]["service"] == "checkout" and a["labels"].get("root_cause") == "payment"
            for a in rec.alerts_at("/chat")), step=lambda: drive(pager, time.time()))
        assert all(a["labels"]["service"] == "checkout" for a in rec.alerts_at("/page/orders"))

        current[:] = []  # resolved
        wait_until("payments' page resolved", lambda: any(
            a["status"] == "resolved" for a in rec.alerts_at("/page/payments")),
            step=lambda: drive(pager, time.time()))
        held = {a["labels"]["service"]: a["status"]["state"] for a in am_alerts(url)
                if a["labels"]["alertname"] == ROOT_ALERT}
        assert "active" not in held.values(), held
        print(f"\nround trip through Alertmanager: {time.time() - t:.1f} s")
    finally:
        stop_process(am)
        rec.close()


@needs_alertmanager
def test_an_alertmanager_that_is_down_gets_the_page_once_it_is_back(tmp_path: Path) -> None:
    rec = Receiver()
    port = free_port()
    sink = AlertmanagerSink(f"http://127.0.0.1:{port}")
    pager = Pager(lambda: [incident("p1", "payment", "payments", {"checkout": "orders"})],
                  [sink])
    now = time.time()
    drive(pager, now)
    assert sink.failures == 1 and sink.sent == 0 and sink.queued() == 2  # kept, counted
    assert "ConnectError" in (pager.status()[0]["last_error"] or "")
    drive(pager, now + 0.5)
    assert sink.failures == 1  # backing off: no retry before 1 s
    drive(pager, now + 1.5)
    assert sink.failures == 2
    am, url = start_alertmanager(tmp_path, routing_config(rec.url, ("payments",)), port=port)
    try:
        wait_until("page delivered", lambda: rec.alerts_at("/page/payments"),
                   step=lambda: drive(pager, time.time() + 120))  # past any backoff
        assert sink.sent == 2 and sink.queued() == 0 and sink.last_error is None
        assert {a["labels"]["service"] for a in am_alerts(url)} == {"payment", "checkout"}
    finally:
        stop_process(am)
        rec.close()


def test_a_failing_webhook_gets_every_event_in_order_with_a_stable_dedup_key() -> None:
    rec = Receiver()
    rec.fail_next = 2
    try:
        current = [incident("p1", "payment", "payments", {})]
        sink = WebhookSink(rec.url + "/events")
        pager = Pager(lambda: current, [sink])
        now = time.time()
        drive(pager, now)  # trigger fails (503)
        drive(pager, now + 1.0)  # the retry fails too
        current.clear()
        drive(pager, now + 1.5)  # resolve queued behind the trigger, backing off
        assert sink.failures == 2 and sink.queued() == 2 and rec.at("/events") == []
        drive(pager, now + 10)
        trigger, resolve = rec.at("/events")
        assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
        assert trigger["dedup_key"] == resolve["dedup_key"]
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["custom_details"]["labels"]["team"] == "payments"
        assert trigger["links"] == []  # no --dashboard-url given
        # A firing alert is not re-triggered every tick (PagerDuty keeps state).
        current.append(incident("p2", "payment", "payments", {}))
        for k in range(5):
            drive(pager, now + 20 + 40 * k)
        assert [e["event_action"] for e in rec.at("/events")] == ["trigger", "resolve",
                                                                   "trigger"]
        assert sink.sent == 3
    finally:
        rec.close()


@pytest.mark.parametrize("make", [lambda: AlertmanagerSink("http://127.0.0.1:9", max_queue=3),
                                  lambda: WebhookSink("http://127.0.0.1:9", max_queue=3)])
def test_a_sink_holds_a_bounded_queue_and_counts_what_it_drops(make: Any) -> None:
    sink: Sink = make()
    many = [incident(f"i{k}", f"svc{k}", "team", {}) for k in range(5)]
    pager = Pager(lambda: many, [sink])
    pager.tick(T0)
    assert sink.queued() == 3 and sink.dropped == 2
    metrics = {m.name: m for m in pager.collect()}
    (dropped,) = metrics["conway_paging_dropped"].samples
    assert dropped.value == 2 and dropped.labels == {"sink": "http://127.0.0.1:9",
                                                     "kind": sink.kind}
    assert metrics["conway_paging_firing_alerts"].samples[0].value == 5


def test_at_a_stop_what_is_queued_gets_one_last_try(capsys: pytest.CaptureFixture[str]) -> None:
    rec = Receiver()
    rec.fail_next = 1
    try:
        current = [incident("p1", "payment", "payments", {})]
        sink = WebhookSink(rec.url + "/events")
        pager = Pager(lambda: current, [sink])
        now = time.time()
        drive(pager, now)  # fails: backing off for a second
        current.clear()
        pager.tick(now + 0.1)  # the resolve, queued behind the trigger
        assert sink.queued() == 2
        asyncio.run(pager.last_flush())  # no waiting out the backoff at a stop
        assert [e["event_action"] for e in rec.at("/events")] == ["trigger", "resolve"]
    finally:
        rec.close()
    dead = Pager(lambda: [incident("p2", "payment", "payments", {})],
                 [AlertmanagerSink(f"http://127.0.0.1:{free_port()}")])
    dead.tick()
    asyncio.run(dead.last_flush())
    assert "1 alerts or events were not delivered before stopping" in capsys.readouterr().err
