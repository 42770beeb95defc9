"""`make demo` (scripts/demo.py) with tokens that begin with "-": argparse must never read a
token as an option, so the shop starts, faults go through and the collector accepts spans."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from demo_harness import free_port_block
from procs import REPO, Proc, free_port

from demo_services.control_client import ControlClient

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


def _spans_accepted(collector: str) -> tuple[float, float]:
    """(spans received, spans refused for a missing or wrong token) from /metrics."""
    received = refused = 0.0
    for line in httpx.get(collector + "/metrics", timeout=5, trust_env=False).text.splitlines():
        if line.startswith("conway_spans_received_total"):
            received += float(line.rsplit(" ", 1)[1])
        if line.startswith('conway_requests_rejected_total{reason="unauthorized"}'):
            refused += float(line.rsplit(" ", 1)[1])
    return received, refused


def _fault(client: ControlClient, name: str) -> dict[str, object]:
    by_name = {s["name"]: s for s in client.services()["services"]}
    return dict(by_name[name]["fault"])


def test_demo_starts_with_tokens_that_begin_with_a_dash(tmp_path: Path) -> None:
    admin_token, ingest_token = "-admin-abc", "-ingest-abc"
    collector_port, dashboard_port, admin_port = free_port(), free_port(), free_port()
    base = free_port_block(12)
    env = {"CONWAY_ADMIN_TOKEN": admin_token, "CONWAY_INGEST_TOKEN": ingest_token,
           "PYTHONUNBUFFERED": "1"}
    paging = ["--alertmanager-port", str(free_port()), "--page-console-port", str(free_port())]
    demo = Proc([sys.executable, "scripts/demo.py", "--collector-port", str(collector_port),
                 "--dashboard-port", str(dashboard_port), "--admin-port", str(admin_port),
                 *paging,
                 "--base-port", str(base), "--rate", "5", "--data-dir", str(tmp_path / "data")],
                tmp_path / "demo.log", env=env)
    collector = f"http://127.0.0.1:{collector_port}"
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        demo.wait_http(f"http://127.0.0.1:{dashboard_port}/", timeout_s=60)
        assert (tmp_path / "data" / "admin-token").read_text().strip() == admin_token
        # The control API wants the dashed token and refuses others.
        client = ControlClient(admin, token=admin_token)
        client.fault("payment", {"error_rate": 0.5})
        assert _fault(client, "payment")["error_rate"] == 0.5
        refused = httpx.post(admin + "/faults/payment", json={"error_rate": 1.0}, timeout=5,
                             headers={"Authorization": "Bearer abc"}, trust_env=False)
        assert refused.status_code in (401, 403)
        # The CLI a person uses finds the token in the environment and clears the fault.
        cli = subprocess.run([sys.executable, "-m", "demo_services", "clear", "--admin", admin],
                             cwd=REPO, env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=30)
        assert cli.returncode == 0, cli.stderr
        assert _fault(client, "payment")["error_rate"] == 0
        # The shop's exporters send the dashed ingest token and the collector accepts it.
        deadline = time.monotonic() + 30
        received, unauthorized = _spans_accepted(collector)
        while received == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            received, unauthorized = _spans_accepted(collector)
        assert received > 0, demo.log()
        assert unauthorized == 0
        if not ALERTMANAGER.exists():
            return
        # With Alertmanager installed the demo pages for real: the fault's team's page
        # arrives through it at the console, which prints it; the victims' teams only hear.
        time.sleep(10)  # a baseline
        client.fault("payment", {"error_rate": 0.5})
        deadline = time.monotonic() + 40
        while "PAGE → payments" not in demo.log() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = demo.log()
        assert "PAGE → payments" in log, log
        pages = [ln for ln in log.splitlines() if ln.startswith("PAGE → ")]
        assert all(ln.startswith("PAGE → payments") for ln in pages), pages
    finally:
        demo.stop()  # SIGTERM: the launcher stops and waits on everything it started
