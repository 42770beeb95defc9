"""The incident pages in headless Chromium against a real collector fed by the OpenTelemetry
SDK: ``/incidents`` lists them (filtered by team), ``/incidents/<id>`` shows the timeline, the
evidence with trace ids, the impacted services and the graph stored with the incident, which
is still there after the collector restarts on the same data dir."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from dash_procs import StartCollector, StartDashboard
from dash_traffic import Shop
from procs import free_port
from test_dash_browser import cy_state, screenshot, send, until


def open_payment_incident(url: str) -> dict[str, Any]:
    shop = Shop(url)
    try:
        send(shop, 30)

        def opened() -> dict[str, Any] | None:
            send(shop, 15, failing={"payment"})
            body = httpx.get(url + "/api/incidents", timeout=5).json()
            return next((i for i in body["incidents"]
                         if i["root_cause"]["service"] == "payment"), None)

        inc: dict[str, Any] = until("an incident for payment", opened, timeout=90)
        # A few more failing requests so its blast radius is in the stored graph.
        until("checkout in its blast radius", lambda: send(shop, 10, failing={"payment"}) or (
            {"checkout"} <= {d["service"] for d in httpx.get(
                url + f"/api/incidents/{inc['id']}", timeout=5).json()["impacted"]}))
        return inc
    finally:
        shop.close()


def drawn(browser: Any) -> dict[str, list[str]]:
    """Node id -> classes on the incident page's graph."""
    state = cy_state(browser, "inc-graph") or {}
    return {n["id"]: list(n["classes"]) for n in state.get("nodes", [])}


def test_incident_pages_show_the_timeline_evidence_and_the_graph_kept_across_a_restart(
    browser: Any, start_collector: StartCollector, start_dashboard: StartDashboard,
    processes: list[Any], tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # It pages to an Alertmanager that is not there: the dashboard must say so.
    dead = f"http://127.0.0.1:{free_port()}"
    url = start_collector(extra=["--data-dir", str(data), "--alertmanager", dead])
    inc = open_payment_incident(url)
    dash_url = start_dashboard(url)

    browser.driver.get(dash_url + "/incidents")
    banner = until("the paging banner", lambda: browser.find_element("#paging-banner").text)
    assert "Pages are not getting through" in banner and dead in banner
    until("payment in the incident list",
          lambda: [a for a in browser.find_elements(".incident-link") if a.text == "payment"])
    until("the team paged in the list",
          lambda: "payments" in browser.find_element(".incidents-table").text.lower())

    def open_payment() -> bool:
        # The list refreshes every second: a link found may be redrawn before the click
        # (stale), so find and click it again until the click lands.
        links = [a for a in browser.find_elements(".incident-link") if a.text == "payment"]
        if links:
            links[0].click()
        return bool(links)

    until("a click on payment's incident", open_payment)
    until("the incident page", lambda: browser.driver.current_url.endswith(
        f"/incidents/{inc['id']}"))
    timeline = until("the timeline", lambda: browser.find_element("#inc-timeline").text)
    assert "opened" in timeline and "payment" in timeline
    assert "No page sent" in browser.find_element(".inc-paged").text  # none delivered
    # Trace ids a person can look up, and the impacted services (the page refreshes every
    # second, so each is read until it holds).
    until("example trace ids", lambda: re.search(
        r"\b[0-9a-f]{32}\b", browser.find_element(".inc-traces").text))
    until("checkout impacted", lambda: "checkout" in browser.find_element(".inc-impacted").text)
    nodes = until("the stored graph drawn", lambda: (d := drawn(browser)) and
                  "s:payment" in d and "s:checkout" in d and d)
    assert "root-cause" in nodes["s:payment"]
    assert "impacted" in nodes["s:checkout"]
    screenshot(browser, "incident-page")

    # Filtered by the team paged: Payments' list has it, Web's does not.
    browser.driver.get(dash_url + "/incidents?team=payments")
    until("the payments list", lambda: [a for a in browser.find_elements(".incident-link")
                                        if a.text == "payment"])
    browser.driver.get(dash_url + "/incidents?team=web")
    # (A busy host may page Web for something else meanwhile: only payment's absence counts.)
    shown = until("the web list", lambda: [a.text for a in browser.find_elements(
        ".incident-link")] or browser.find_elements("#incs-empty") and ["(empty)"])
    assert "payment" not in shown, shown

    # The collector restarts on the same data dir with no traffic at all: the incident page
    # still draws the graph stored with it.
    stored = httpx.get(url + f"/api/incidents/{inc['id']}", timeout=5).json()["graph"]
    for p in list(processes):
        p.stop()
    processes.clear()
    url2 = start_collector(extra=["--data-dir", str(data)])
    dash2 = start_dashboard(url2)
    browser.driver.get(dash2 + f"/incidents/{inc['id']}")
    until("no paging banner without a pager", lambda: browser.find_element(
        "#inc-timeline") and not browser.find_elements("#paging-banner"))
    again = until("the stored graph after a restart", lambda: (d := drawn(browser)) and
                  "s:payment" in d and d)
    assert set(again) == set(nodes)
    assert "root-cause" in again["s:payment"]
    # The incident's own graph, as stored before the restart (still open, it keeps merging
    # the worst numbers it sees, but from the same first capture).
    after = httpx.get(url2 + f"/api/incidents/{inc['id']}", timeout=5).json()["graph"]
    assert after["captured_at"] == stored["captured_at"]
    assert {(n["id"], n["role"]) for n in after["nodes"]} >= {
        (n["id"], n["role"]) for n in stored["nodes"]}
    browser.driver.get(dash2 + "/incidents/no-such-incident")
    until("a clear error for an unknown id",
          lambda: "No incident" in browser.find_element(".error-box").text)
