"""Time travel in headless Chromium against a real collector fed by the OpenTelemetry SDK:
``/?at=T`` shows the graph as it was at T (a payment fault that has since cleared is drawn
failing at its time, not now), the moment survives a reload, "Live" returns to now, and a
moment set with the time control is written to the address bar and survives a reload too.

No timed assertions: each step waits (bounded) for what a person would see."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from dash_procs import StartCollector, StartDashboard
from dash_traffic import Shop
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

WAIT_S = 40.0
WINDOW = "10"  # the dashboard's window: a cleared fault leaves the live graph in ~10 s

CY_CLASSES_JS = """
const root = document.getElementById('ov-graph');
if (!root) { return null; }
for (const el of [root, ...root.querySelectorAll('*')]) {
  if (el._cyreg && el._cyreg.cy) {
    const out = {};
    el._cyreg.cy.nodes().forEach(n => { out[n.id()] = n.classes(); });
    return out;
  }
}
return null;
"""


def until(what: str, check: Callable[[], Any], timeout: float = WAIT_S,
          describe: Callable[[], Any] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying what never happened
    (and what ``describe`` says was on screen)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (NoSuchElementException, StaleElementReferenceException) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    seen = describe() if describe is not None else None
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}; seen: {seen!r}")


def payment_classes(browser: Any) -> list[str]:
    found = browser.driver.execute_script(CY_CLASSES_JS) or {}
    return list(found.get("s:payment") or [])


def marker(browser: Any) -> str:
    return str(browser.find_element("#tt-marker").text)


def url_at(browser: Any) -> str | None:
    values = parse_qs(urlsplit(browser.driver.current_url).query).get("at")
    return values[0] if values else None


def on_screen(browser: Any) -> dict[str, Any]:
    return {"payment": payment_classes(browser), "marker": marker(browser),
            "url": browser.driver.current_url,
            "status": browser.find_element("#status-line").text}


def live_health(url: str, service: str) -> str | None:
    body = httpx.get(url + "/api/graph", params={"window": WINDOW}, timeout=5).json()
    return next((n["health"] for n in body["nodes"] if n["id"] == service), None)


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


def test_at_shows_a_cleared_fault_at_its_time_and_survives_a_reload(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard
) -> None:
    url, shop = shop_collector
    send(shop, 20)

    def failing_now() -> float | None:
        send(shop, 10, failing={"payment"})
        body = httpx.get(url + "/api/graph", params={"window": WINDOW}, timeout=5).json()
        health = {n["id"]: n["health"] for n in body["nodes"]}
        return float(body["generated_at"]) if health.get("payment") == "failing" else None

    # Rounded up: a fault seen within the collector's first window would round down to before
    # its history.
    t_fault = math.ceil(until("payment failing in the collector's graph", failing_now))

    def healthy_now() -> bool:
        send(shop, 5)
        return live_health(url, "payment") == "healthy"

    until("payment healthy again", healthy_now, timeout=90)
    dash_url = start_dashboard(url, extra=["--window-s", WINDOW])

    past = httpx.get(url + "/api/graph", params={"window": WINDOW, "at": t_fault},
                     timeout=5).json()
    assert "nodes" in past, past
    assert {n["id"]: n["health"] for n in past["nodes"]}["payment"] == "failing", past

    browser.driver.get(f"{dash_url}/?at={t_fault}")
    until("the past drawn with payment failing",
          lambda: "failing" in payment_classes(browser) and "Viewing" in marker(browser),
          describe=lambda: on_screen(browser))
    past_marker = marker(browser).split(" — ")[0]  # "Viewing HH:MM:SS" (then: "N s ago")
    assert "tt-bar past" in browser.find_element("#tt-bar").get_attribute("class")
    assert url_at(browser) == str(t_fault)
    assert "(history)" in browser.find_element("#status-line").text

    # A reload opens the same moment: still the past, still failing.
    browser.driver.refresh()
    until("the same moment after a reload",
          lambda: "failing" in payment_classes(browser)
          and marker(browser).startswith(past_marker), describe=lambda: on_screen(browser))
    assert url_at(browser) == str(t_fault)

    # Live: now, where payment has recovered (and serves); the address bar loses ?at=.
    browser.find_element("#tt-live").click()

    def live_and_healthy() -> bool:
        send(shop, 3)
        return "healthy" in payment_classes(browser) and marker(browser).startswith("Live")

    until("the live graph with payment healthy", live_and_healthy,
          describe=lambda: on_screen(browser))
    until("?at= gone from the address bar", lambda: url_at(browser) is None)


def test_the_time_control_writes_the_moment_to_the_url_and_survives_a_reload(
    browser: Any, shop_collector: tuple[str, Shop], start_dashboard: StartDashboard
) -> None:
    url, shop = shop_collector
    send(shop, 20)
    dash_url = start_dashboard(url)
    browser.driver.get(dash_url + "/")
    until("the live graph", lambda: payment_classes(browser)
          and marker(browser).startswith("Live"))
    send(shop, 5)
    until("a history to step back in", lambda: (
        httpx.get(url + "/api/history", timeout=5).json()["history"]["to"]
        - httpx.get(url + "/api/history", timeout=5).json()["history"]["earliest_at"]) > 15)

    browser.find_element("#tt-bar button.tt-step[title='back 10 s']").click()
    at = until("?at= in the address bar", lambda: url_at(browser),
               describe=lambda: on_screen(browser))
    until("the bar marking the past", lambda: marker(browser).startswith("Viewing"))
    shown = marker(browser).split(" — ")[0]  # "Viewing HH:MM:SS"

    browser.driver.refresh()
    until("the same moment after a reload",
          lambda: marker(browser).startswith(shown) and payment_classes(browser))
    assert url_at(browser) == at
    # The graph no longer follows the collector while in the past: new traffic is not drawn.
    send(shop, 5, failing={"payment"})
    time.sleep(3)  # let refreshes happen: none may move the past (not a timing assertion)
    assert "failing" not in payment_classes(browser)
    assert marker(browser).startswith(shown)
