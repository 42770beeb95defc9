"""Test helpers for paging: a real Alertmanager process and a webhook receiver that records
what reaches it. Tests needing the binary skip with a reason when it is missing (``make
test`` installs Debian's ``prometheus-alertmanager``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import free_port, stop

AM_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
needs_alertmanager = pytest.mark.skipif(
    not Path(AM_BIN).exists(),
    reason="prometheus-alertmanager is not installed (make system-deps installs Debian's)")


class Receiver:
    """An HTTP server on loopback recording every POST: (path, JSON body). ``status`` may
    be set to make it fail (e.g. 503) for the next ``fail_next`` posts."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.received: list[tuple[str, float]] = []  # (path, wall-clock time) of each post
        self.fail_next = 0
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with rec.lock:
                    failing = rec.fail_next > 0
                    if failing:
                        rec.fail_next -= 1
                    else:
                        rec.posts.append((self.path, json.loads(body or b"null")))
                        rec.received.append((self.path, time.time()))
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str) -> list[Any]:
        with self.lock:
            return [body for p, body in self.posts if p == path]

    def first_seen(self, path: str) -> float:
        """When the first post to ``path`` arrived (wall clock)."""
        with self.lock:
            return min(t for p, t in self.received if p == path)

    def alerts_at(self, path: str) -> list[dict[str, Any]]:
        """Every alert in Alertmanager's notifications to ``path`` (with its status)."""
        return [a for n in self.at(path) for a in n.get("alerts", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def routing_config(receiver: str, teams: tuple[str, ...]) -> str:
    """An Alertmanager config as ``deploy/alertmanager.yml`` routes, with every receiver a
    path of ``receiver``: each team's page to /page/<team>, info alerts to /chat, anything
    else to /default. Short group timers so a test sees notifications within seconds."""
    routes = "\n".join(
        f"    - matchers: ['team=\"{t}\"', 'severity=\"page\"']\n      receiver: page-{t}"
        for t in teams)
    receivers = "\n".join(
        f"  - name: page-{t}\n    webhook_configs:\n"
        f"      - url: {receiver}/page/{t}\n        send_resolved: true" for t in teams)
    return f"""
route:
  receiver: default
  group_by: [alertname, team, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="info"']
      receiver: chat
{routes}
receivers:
  - name: default
    webhook_configs:
      - url: {receiver}/default
        send_resolved: true
  - name: chat
    webhook_configs:
      - url: {receiver}/chat
        send_resolved: true
{receivers}
"""


def start_alertmanager(tmp: Path, config: str, port: int | None = None
                       ) -> tuple[subprocess.Popen[bytes], str]:
    """The real Alertmanager on loopback (no cluster), waited for until ready."""
    port = port or free_port()
    cfg = tmp / f"alertmanager-{port}.yml"
    cfg.write_text(config)
    data = tmp / f"am-data-{port}"
    data.mkdir(exist_ok=True)
    with (tmp / f"alertmanager-{port}.log").open("wb") as log:  # the child keeps its own fd
        proc = subprocess.Popen(
            [AM_BIN, f"--config.file={cfg}", f"--storage.path={data}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"alertmanager exited: {(tmp / f'alertmanager-{port}.log')}")
        try:
            if httpx.get(url + "/-/ready", timeout=0.5, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError("alertmanager did not become ready")


# Alertmanager processes are ended like every other child of a test (``procs.stop``).
stop_process = stop


def am_alerts(url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds (``GET /api/v2/alerts``)."""
    return list(httpx.get(url + "/api/v2/alerts", timeout=5, trust_env=False).json())


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0,
               step: Callable[[], None] | None = None) -> Any:
    """Poll ``check`` (after ``step``, when given) until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step is not None:
            step()
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def iter_labels(alerts: list[dict[str, Any]]) -> Iterator[tuple[str, str, str, str]]:
    """(alertname, service, severity, status) of each alert in notifications."""
    for a in alerts:
        lab = a["labels"]
        yield lab["alertname"], lab.get("service", ""), lab.get("severity", ""), a["status"]
