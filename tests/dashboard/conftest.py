"""Fixtures for the dashboard's browser tests: a headless Chromium for ``dash_br``, and real
``python -m collector`` / ``python -m dashboard`` processes on free loopback ports, always
stopped (and waited for) even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_procs import (
    CATALOG,
    CHROMIUM,
    PYTHON,
    Proc,
    StartCollector,
    StartDashboard,
    browser_available,
    collector_available,
)
from procs import free_port

CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


def pytest_setup_options() -> Any:
    """dash[testing] hook: the Chrome options for ``dash_br`` / ``dash_duo``."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    return options


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for p in reversed(procs):
        p.stop()


@pytest.fixture
def start_collector(processes: list[Proc], tmp_path: Path) -> StartCollector:
    def start(*, catalog: Path | None = CATALOG, extra: list[str] | None = None) -> str:
        reason = collector_available()
        if reason:
            pytest.skip(reason)
        port = free_port()
        args = [PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port", str(port)]
        if catalog is not None:
            args += ["--catalog", str(catalog)]
        args += extra or []
        proc = Proc(args, tmp_path / f"collector-{port}.log")
        processes.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(url + "/healthz")
        return url

    return start


@pytest.fixture
def start_dashboard(processes: list[Proc], tmp_path: Path) -> StartDashboard:
    def start(collector_url: str, *, extra: list[str] | None = None) -> str:
        port = free_port()
        args = [PYTHON, "-m", "dashboard", "--collector", collector_url,
                "--port", str(port), "--refresh-ms", "1000", *(extra or [])]
        proc = Proc(args, tmp_path / f"dashboard-{port}.log")
        processes.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(url + "/")
        return url

    return start


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Any:
    """``dash_br`` (dash[testing]'s Selenium browser), skipped when Chromium is missing."""
    reason = browser_available()
    if reason:
        pytest.skip(reason)
    return request.getfixturevalue("dash_br")
