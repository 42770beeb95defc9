"""Helpers every test package shares: free loopback ports and real collector processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port free right now (tests run in parallel with other suites: never fixed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_collector(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m collector`` on a free port, waited for until ``/healthz`` answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "--port", str(port), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"collector exited: {err}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("collector did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this test started, and wait for it (nothing else reaps it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
