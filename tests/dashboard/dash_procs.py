"""Real child processes for the dashboard's browser tests (collector, dashboard)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "catalog" / "catalog-info.yaml"
CHROMIUM = os.environ.get("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
START_TIMEOUT_S = 30.0
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



class Proc:
    """A child process with its log file; ``stop`` terminates it by PID and waits."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_http(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{url}: process exited early:\n{self.log()}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} not ready after {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


StartCollector = Callable[..., str]
StartDashboard = Callable[..., str]


