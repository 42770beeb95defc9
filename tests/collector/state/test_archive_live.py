"""The archive of past graphs with a real collector process: ``--data-dir`` with a 6 s
retention and a 2 s archive period (``--archive-every``; a minute by default), calls sent with
the OpenTelemetry SDK. Once the calls are older than the retained statistics, ``?at=`` shows
them from the archive (its background loop wrote them), ``/api/history`` reaches back to them,
``/metrics`` counts the archived graphs, and a restart on the same dir still shows them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from live_collector import Collector, metric, sdk_call, sdk_provider
from test_data_dir import wait_until

ARGS = ("--retention", "6", "--archive-every", "2")


def _get(url: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(url + path, params=params, timeout=10, trust_env=False)


def test_calls_older_than_the_retention_are_shown_from_the_archive(tmp_path: Path) -> None:
    c = Collector("--data-dir", str(tmp_path), *ARGS, log=tmp_path / "collector.log")
    try:
        client, server = sdk_provider(c.url, "arch-front"), sdk_provider(c.url, "arch-back")
        start = time.time()
        while time.time() - start < 4.0:
            sdk_call(client, server)
            time.sleep(0.05)
        sent_at = time.time()
        client.shutdown()
        server.shutdown()
        # Past the retention: the live graph has forgotten them...
        wait_until("the calls to leave the retained statistics", lambda: time.time() > sent_at + 9)
        live = _get(c.url, "/api/graph").json()
        assert not any(e["source"] == "arch-front" for e in live["edges"]), live["edges"]
        # ...the archive has not.
        past = _get(c.url, "/api/graph", at=sent_at - 1)
        assert past.status_code == 200, past.text
        body = past.json()
        assert body["archived"]["window_s"] == 2.0
        assert abs(body["archived"]["at"] - (sent_at - 1)) <= 2.0
        (edge,) = [e for e in body["edges"] if e["source"] == "arch-front"]
        assert edge["target"] == "arch-back" and edge["calls"] > 0
        history = _get(c.url, "/api/history").json()
        assert history["history"]["earliest_at"] <= start
        assert history["history"]["archived_until"] > sent_at
        assert history["archive"]["minutes"] >= 5
        assert metric(c.url, "conway_archive_written_minutes_total") >= 5
    finally:
        c.stop()
    assert c.proc.returncode == 0
    # A restart on the same dir: still there.
    again = Collector("--data-dir", str(tmp_path), *ARGS, log=tmp_path / "collector.log")
    try:
        body = _get(again.url, "/api/graph", at=sent_at - 1).json()
        assert any(e["source"] == "arch-front" for e in body["edges"]), body
    finally:
        again.stop()
    assert "Traceback" not in (tmp_path / "collector.log").read_text()
