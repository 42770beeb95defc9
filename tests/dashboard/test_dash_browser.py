"""The dashboard in headless Chromium against a real collector fed by the OpenTelemetry SDK.

What the user sees on the Cytoscape canvas is read from the live Cytoscape instance in the
page (the container's ``_cyreg``), i.e. the elements actually drawn.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from dash_procs import ROOT, StartCollector, StartDashboard
from dash_traffic import Shop
from procs import free_port
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)

EVIL = "<img src=x onerror=alert(1)>"
WAIT_S = 40.0

TEAM_OF = {
    "frontend": "web", "ad": "web", "product-catalog": "discovery",
    "recommendation": "discovery", "checkout": "orders", "cart": "orders", "shipping": "orders",
    "payment": "payments", "currency": "payments", "fraud-detection": "payments",
    "email": "comms",
}

CY_NODES_JS = """
const root = document.getElementById(arguments[0]);
if (!root) { return null; }
let cy = null;
for (const el of [root, ...root.querySelectorAll('*')]) {
  if (el._cyreg && el._cyreg.cy) { cy = el._cyreg.cy; break; }
}
if (!cy) { return null; }
return {
  zoom: cy.zoom(),
  nodes: cy.nodes().map(n => ({
    id: n.id(), parent: n.isChild() ? n.parent().id() : null, classes: n.classes(),
    x: n.position('x'), y: n.position('y'), label: n.data('label') || ''})),
};
"""


def until(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (NoSuchElementException, StaleElementReferenceException) as exc:
            last = exc  # not drawn yet, or redrawn under us: look again
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def cy_state(browser: Any, graph_id: str = "ov-graph") -> dict[str, Any] | None:
    state: dict[str, Any] | None = browser.driver.execute_script(CY_NODES_JS, graph_id)
    return state


def cy_nodes(browser: Any) -> dict[str, dict[str, Any]]:
    state = cy_state(browser)
    return {n["id"]: n for n in (state or {}).get("nodes", [])}


@pytest.fixture
def shop_collector(start_collector: StartCollector) -> Iterator[tuple[str, Shop]]:
    url = start_collector()
    shop = Shop(url)
    try:
        yield url, shop
    finally:
        shop.close()


def send(shop: Shop, count: int, **kw: Any) -> None:
    for _ in range(count):
        shop.request(**kw)
    shop.flush()


def screenshot(browser: Any, name: str) -> None:
    """Keep a picture for people when CONWAY_SCREENSHOT_DIR is set (not an assertion)."""
    folder = os.environ.get("CONWAY_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_graph_shows_every_service_inside_its_team_and_keeps_zoom(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard
) -> None:
    url, shop = shop_collector
    send(shop, 20)
    dash_url = start_dashboard(url)
    browser.driver.get(dash_url + "/")

    def all_drawn() -> dict[str, dict[str, Any]] | None:
        nodes = cy_nodes(browser)
        wanted = [f"s:{s}" for s in [*TEAM_OF, "quote"]]
        return nodes if all(w in nodes for w in wanted) else None

    nodes = until("every demo service on the graph", all_drawn)
    for service, team in TEAM_OF.items():
        assert nodes[f"s:{service}"]["parent"] == f"g:team:{team}", service
        assert "team" in nodes[f"g:team:{team}"]["classes"]
    # Every other service sits where the collector says it belongs: its team or the orphans.
    graph = httpx.get(url + "/api/graph", timeout=5).json()
    for n in graph["nodes"]:
        if n["kind"] != "service":
            continue
        drawn = nodes[f"s:{n['id']}"]
        if n["team"]:
            assert drawn["parent"] == f"g:team:{n['team']}", n
        else:
            assert drawn["parent"] == "g:(no team)" and "orphan" in drawn["classes"], n
    for virtual in ("s:redis", "s:orders"):
        assert virtual in nodes and nodes[virtual]["parent"] is None
        assert "virtual" in nodes[virtual]["classes"]

    # Zoom in; refreshes (new traffic) must neither move nodes nor reset the zoom.
    browser.driver.execute_script(
        CY_NODES_JS.replace("return {", "cy.zoom(1.7); return {"), "ov-graph"
    )
    before = cy_state(browser)
    assert before is not None
    status = browser.find_element("#status-line").text
    send(shop, 10)
    until("two refreshes", lambda: browser.find_element("#status-line").text != status)
    time.sleep(1.2)
    after = cy_state(browser)
    assert after is not None
    assert after["zoom"] == pytest.approx(1.7)
    moved = {
        n["id"] for n in after["nodes"]
        for m in before["nodes"]
        if n["id"] == m["id"] and n["parent"] is not None
        and (n["x"], n["y"]) != (m["x"], m["y"])
    }
    assert not moved
    screenshot(browser, "overview-healthy")


def test_fault_names_the_root_cause_and_team_to_page(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard
) -> None:
    url, shop = shop_collector
    probe = httpx.get(url + "/api/incidents", timeout=5)
    if probe.status_code == 404:
        pytest.skip("this collector has no /api/incidents (diagnosis not installed)")
    send(shop, 30)
    dash_url = start_dashboard(url)
    browser.driver.get(dash_url + "/")
    until("the graph", lambda: "s:payment" in cy_nodes(browser))

    def incident_open() -> bool:
        send(shop, 15, failing={"payment"})
        body = httpx.get(url + "/api/incidents", params={"status": "open"}, timeout=5).json()
        return any(i.get("status") == "open" for i in body.get("incidents", []))

    until("an open incident", incident_open, timeout=90)
    # The banner is on every page: start from the team page of a bystander.
    browser.driver.get(dash_url + "/teams/web")
    until("root cause payment in the banner",
          lambda: browser.find_elements(".root-button")
          and "payment" == browser.find_element(".root-button").text)
    text = browser.find_element("#page-banner").text
    assert "Page Payments" in text  # the owning team to page, by its display name
    assert "checkout" in text and "Orders" in text  # impacted, with their teams
    # Clicking the root cause opens the overview with it and its blast radius highlighted.
    browser.find_element(".root-button").click()
    nodes = until(
        "root cause highlighted on the overview",
        lambda: (n := cy_nodes(browser)) and "s:payment" in n
        and "root-cause" in n["s:payment"]["classes"] and n,
    )
    assert browser.driver.current_url.rstrip("/") == dash_url
    assert "root-cause" not in nodes["s:cart"]["classes"]
    impacted = [k for k, v in nodes.items() if "impacted" in v["classes"]]
    assert "s:checkout" in impacted
    screenshot(browser, "overview-fault")


def test_deep_links_open_the_right_pages(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard
) -> None:
    url, shop = shop_collector
    send(shop, 10)
    dash_url = start_dashboard(url)
    browser.driver.get(dash_url + "/services/checkout")
    browser.wait_for_text_to_equal(".service-name", "checkout", timeout=WAIT_S)
    until("the owner card", lambda: "orders" in browser.find_element(".owner-card").text.lower())
    until("callees listed", lambda: "payment" in browser.find_element("#svc-body").text)
    assert browser.find_elements("#svc-chart .main-svg")
    # That page came in the layout (dashboard.app.routed_pages); Dash's router still routes
    # what follows, and back.
    browser.find_element("#nav-teams").click()
    until("the team list after a click", lambda: "quote" in browser.find_element(
        "#teams-list").text)
    browser.driver.back()
    browser.wait_for_text_to_equal(".service-name", "checkout", timeout=WAIT_S)

    browser.driver.get(dash_url + "/teams/payments")
    browser.wait_for_text_to_equal(".team-name", "payments", timeout=WAIT_S)
    until("the team's services", lambda: "fraud-detection" in browser.find_element(
        "#team-body").text)

    browser.driver.get(dash_url + "/teams")
    until("the team list", lambda: "quote" in browser.find_element("#teams-list").text)

    browser.driver.get(dash_url + "/demo")
    until("the demo page", lambda: browser.find_elements("#demo-off"))
    assert "--demo-admin" in browser.find_element("#demo-off").text

    browser.driver.get(dash_url + "/services/no-such-service")
    until("a clear not-found message",
          lambda: "has not seen a service" in browser.find_element("#svc-body").text)


EARLY_JS = """
const all = performance.getEntriesByType('resource');
const named = (end) => all.filter(e => e.name.split('?')[0].endsWith(end));
const nav = performance.getEntriesByType('navigation')[0];
return {layout: named('/_dash-layout').map(e => e.startTime),
        dependencies: named('/_dash-dependencies').map(e => e.startTime),
        scripts_run: nav.domInteractive,
        native_fetch: String(window.fetch).includes('[native code]')};
"""


def test_the_first_requests_go_out_before_the_scripts_and_are_used_once(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard
) -> None:
    # dashboard.app.EARLY_FETCH: the layout and the callbacks are asked for by the page's
    # first script, and the renderer takes those answers instead of asking again.
    url, shop = shop_collector
    send(shop, 10)
    dash_url = start_dashboard(url)
    for path in ("/", "/services/checkout"):
        browser.driver.get(dash_url + path)
        if path == "/":
            until("the graph", lambda: len(cy_nodes(browser)) >= 10)
        else:
            browser.wait_for_text_to_equal(".service-name", "checkout", timeout=WAIT_S)
        seen = browser.driver.execute_script(EARLY_JS)
        assert len(seen["layout"]) == 1 and len(seen["dependencies"]) == 1, seen
        # Parsing ends (domInteractive) after every script ran, the renderer's among them:
        # only the page's first script can have asked before that.
        assert seen["layout"][0] < seen["scripts_run"], seen
        assert seen["dependencies"][0] < seen["scripts_run"], seen
        assert seen["native_fetch"], "the page's fetch is handed back once both are taken"


def test_hostile_service_name_is_shown_as_text(
    browser: Any, start_collector: StartCollector, start_dashboard: StartDashboard
) -> None:
    url = start_collector()
    shop = Shop(url, calls={EVIL: ["frontend"], "frontend": []})
    try:
        send(shop, 10, root=EVIL)
    finally:
        shop.close()
    dash_url = start_dashboard(url)
    browser.driver.get(dash_url + "/")
    until("the hostile node on the graph", lambda: f"s:{EVIL}" in cy_nodes(browser))
    browser.driver.get(dash_url + "/services/" + quote(EVIL, safe=""))
    browser.wait_for_text_to_equal(".service-name", EVIL, timeout=WAIT_S)
    until("its callees", lambda: "frontend" in browser.find_element("#svc-body").text)
    browser.driver.get(dash_url + "/teams")
    until("it listed as an orphan", lambda: EVIL in browser.find_element("#teams-list").text)
    assert browser.driver.execute_script("return document.querySelectorAll('img').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.driver.switch_to.alert.text  # noqa: B018  (raises when no alert is open)


def test_unreachable_collector_banner(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard,
    processes: list[Any],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    dash_url = start_dashboard(closed)
    browser.driver.get(dash_url + "/")
    until("the unreachable banner",
          lambda: browser.find_elements("#collector-banner")
          and f"Collector unreachable at {closed} since" in browser.find_element(
              "#collector-banner").text)

    # A collector that goes away: the last graph stays, greyed and marked stale.
    url, shop = shop_collector
    send(shop, 10)
    dash2 = start_dashboard(url)
    browser.driver.get(dash2 + "/")
    until("the graph", lambda: "s:frontend" in cy_nodes(browser))
    collector_proc = next(p for p in processes if "collector" in p.log_path.name)
    collector_proc.stop()
    until("the unreachable banner",
          lambda: browser.find_elements("#collector-banner")
          and "stale since" in browser.find_element("#collector-banner").text)
    assert "stale" in browser.find_element("#ov-graph-wrap").get_attribute("class")
    assert "stale since" in browser.find_element("#ov-info").text
    assert "s:frontend" in cy_nodes(browser)
    screenshot(browser, "overview-stale")


# shared/ sits beside the repository (here and in CI).
LARGE = ROOT.parent / "shared" / "reference-traces" / "jaeger-ui--dependencygraph-large.json"


def test_large_graph_is_folded_and_searchable(
    browser: Any, start_collector: StartCollector, start_dashboard: StartDashboard
) -> None:
    if not LARGE.exists():
        pytest.skip(f"{LARGE} not present")
    from collector.replay import dependencies_to_spans, to_otlp_request

    url = start_collector(catalog=None)
    deps = json.loads(LARGE.read_text())
    body = to_otlp_request(dependencies_to_spans(deps, time.time_ns()))
    httpx.post(url + "/v1/traces", content=body, timeout=60,
               headers={"Content-Type": "application/x-protobuf"}).raise_for_status()
    dash_url = start_dashboard(url)
    browser.driver.get(dash_url + "/")
    nodes = until("the folded graph", lambda: cy_nodes(browser))
    assert all(n["id"].startswith("g:") for n in nodes.values())
    assert len(nodes) <= 32
    until("the fold notice", lambda: "teams folded" in browser.find_element("#ov-info").text)

    # Search narrows the view to one service and its neighbours, selected.
    neighbours = {d["child"] for d in deps if d["parent"] == "Service50"}
    neighbours |= {d["parent"] for d in deps if d["child"] == "Service50"}
    search = browser.find_element("#ov-search")
    search.send_keys("Service50\n")
    focused = until(
        "the searched neighbourhood",
        lambda: (n := cy_nodes(browser)) and "s:Service50" in n and n,
    )
    shown = {k[2:] for k, v in focused.items() if k.startswith("s:")}
    assert shown == neighbours | {"Service50"}
    assert "picked" in focused["s:Service50"]["classes"]
    until("the details panel", lambda: "Service50" in browser.find_element("#ov-details").text)
