"""Real child processes for the dashboard's browser tests (collector, dashboard)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from procs import Proc as Proc

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "catalog" / "catalog-info.yaml"
CHROMIUM = os.environ.get("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
PYTHON = sys.executable


def browser_available() -> str | None:
    """None if headless Chromium and its driver are installed, else why not."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not installed (apt-get install chromium; `make system-deps`)"
    if shutil.which("chromedriver") is None:
        return "chromedriver not on PATH (apt-get install chromium-driver)"
    return None


def collector_available() -> str | None:
    if not (ROOT / "collector" / "__main__.py").exists():
        return "the collector (python -m collector) is not in this tree yet"
    return None





StartCollector = Callable[..., str]
StartDashboard = Callable[..., str]


