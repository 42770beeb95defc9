"""The "step back in time" figure: ms from a click on the overview's "◀ 1 min" until the past
graph is in (the bar marks the moment, which it does once ``/api/graph?at=`` has answered and
the state holds it, then one animation frame for the graph to be drawn), and from "Live" back.

`step_back_ms` / `live_ms` take a Selenium driver on an overview already drawn live, so
``bench/render.py`` can call them after its draw and click figures:

    from stepback import live_ms, step_back_ms
    back = step_back_ms(driver); now = live_ms(driver)

Standalone it starts its own collector (fed a few seconds of shop traffic) and dashboard:
    .venv/bin/python bench/stepback.py [--runs 5]
Needs /usr/bin/chromium and chromedriver. Prints a figure; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

TIMEOUT_S = 60.0

_CLICK_AND_WAIT = """
const done = arguments[arguments.length - 1];
const selector = arguments[0], wantPast = arguments[1];
const button = document.querySelector(selector);
if (!button) { done(-1); return; }
const t0 = performance.now();
button.click();
(function check() {
  const bar = document.getElementById('tt-bar');
  const text = (document.getElementById('tt-marker') || {}).textContent || '';
  const past = bar && bar.classList.contains('past');
  const ready = wantPast ? past && text.startsWith('Viewing') : !past && text.startsWith('Live');
  if (ready) { requestAnimationFrame(() => done(performance.now() - t0)); }
  else { setTimeout(check, 5); }
})();
"""


def _timed(driver: Any, selector: str, past: bool) -> float:
    driver.set_script_timeout(TIMEOUT_S)
    ms = float(driver.execute_async_script(_CLICK_AND_WAIT, selector, past))
    if ms < 0:
        raise RuntimeError(f"no {selector} on the page: is it the overview?")
    return ms


def step_back_ms(driver: Any) -> float:
    """Click "◀ 1 min" on a live overview; ms until the past moment is shown."""
    return _timed(driver, "#tt-bar button.tt-step[title='back 60 s']", True)


def live_ms(driver: Any) -> float:
    """Click "Live" on an overview showing the past; ms until it is live again."""
    return _timed(driver, "#tt-live", False)


def main() -> int:
    import random
    import subprocess
    import tempfile
    from pathlib import Path

    import httpx
    from benchlib import free_port, shop_batch, stop, wait_http
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    root = Path(__file__).resolve().parents[1]
    cport, dport = free_port(), free_port()
    curl, durl = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{dport}"
    tmp = Path(tempfile.mkdtemp(prefix="conway-stepback-"))
    logs = (tmp / "collector.log").open("wb"), (tmp / "dashboard.log").open("wb")
    collector = subprocess.Popen(
        [sys.executable, "-m", "collector", "--port", str(cport), "--catalog",
         str(root / "catalog" / "catalog-info.yaml")],
        cwd=root, stdout=logs[0], stderr=subprocess.STDOUT)
    dashboard: subprocess.Popen[bytes] | None = None
    driver = None
    try:
        wait_http(curl + "/healthz", collector, log=tmp / "collector.log")
        rng = random.Random(1)
        for i in range(5):  # a few seconds of shop traffic: a history to step back in
            body, _, _ = shop_batch(rng, 1 + 200 * i, 200, time.time_ns())
            httpx.post(curl + "/v1/traces", content=body, timeout=30,
                       headers={"Content-Type": "application/x-protobuf"}).raise_for_status()
            time.sleep(1.0)
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "--collector", curl, "--port", str(dport)],
            cwd=root, stdout=logs[1], stderr=subprocess.STDOUT)
        wait_http(durl + "/", dashboard, log=tmp / "dashboard.log")
        options = Options()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options)
        driver.get(durl + "/")
        deadline = time.monotonic() + TIMEOUT_S
        while not driver.execute_script(
                "const m = document.getElementById('tt-marker');"
                "return m && m.textContent.startsWith('Live');"):
            if time.monotonic() > deadline:
                print("the overview never went live", file=sys.stderr)
                return 1
            time.sleep(0.2)
        back, live = [], []
        for _ in range(a.runs):
            back.append(step_back_ms(driver))
            live.append(live_ms(driver))
        print(f"step back in time (demo shop, ◀ 1 min): median {statistics.median(back):.0f} "
              f"ms, max {max(back):.0f} ms over {a.runs}; back to live: median "
              f"{statistics.median(live):.0f} ms")
    finally:
        if driver is not None:
            driver.quit()
        if dashboard is not None:
            stop(dashboard)
        stop(collector)
        for log in logs:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
