"""`up` on a small custom topology: it serves the topology, drives load, and a signal stops
every process it started (each one waited on, none left behind)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from demo_harness import (
    OtlpReceiver,
    descendants,
    pid_alive,
    services_in,
    start_shop,
    trace_id_of,
)
from prometheus_client.parser import text_string_to_metric_families

TINY = """
virtual:
  kv: {db_system: redis}
services:
  web:
    port: 1
    routes:
      - route: GET /
        calls:
          - {to: api, route: GET /items, timeout_ms: 2000}
          - {to: extra, route: GET /extra, required: false, timeout_ms: 2000}
  api:
    port: 2
    routes:
      - route: GET /items
        calls:
          - {to: kv, operation: GET}
  extra:
    port: 3
    routes:
      - route: GET /extra
"""


def _home_requests(url: str) -> float:
    text = httpx.get(url + "/metrics", trust_env=False, timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "http_server_requests":
            return sum(
                s.value for s in family.samples
                if s.name.endswith("_total") and s.labels["route"] == "/"
            )
    return 0.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_process(
    sig: signal.Signals, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TINY)
    shop = start_shop(tmp_path, receiver.url, topology=topology, count=3,
                      extra=["--rate", "20"])
    try:
        entries = shop.services()["services"]
        assert [e["name"] for e in entries] == ["web", "api", "extra"]
        assert [e["port"] for e in entries] == [shop.base_port + i for i in range(3)]
        pids = [int(e["pid"]) for e in entries]
        web = entries[0]["url"]
        # The load generator's users reach the entry service without any request from us.
        deadline = time.monotonic() + 20
        while _home_requests(web) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _home_requests(web) > 0
        # A restarted process (down, then clear) must be stopped and waited on too.
        assert shop.fault("extra", down=True).status_code == 200
        assert shop.clear("extra").status_code == 200
        restarted = next(e for e in shop.services()["services"] if e["name"] == "extra")
        assert restarted["state"] == "up" and restarted["pid"] != pids[2]
        pids.append(int(restarted["pid"]))
        # The services plus `up`'s helpers (multiprocessing's fork server and resource tracker).
        tree = descendants(shop.proc.pid)
        assert set(pids[:2] + pids[3:]) < tree
        # Spans still batched in the services when the signal arrives are flushed, not lost.
        response = httpx.get(web + "/", trust_env=False, timeout=10)
        assert response.status_code == 200
    finally:
        code = shop.stop(sig)
    assert code == 0
    assert [p for p in {*pids, *tree} if pid_alive(p)] == []
    assert {"web", "api", "extra"} <= services_in(receiver.trace(trace_id_of(response)))
    log = shop.log.read_text()
    assert "stopping the shop" in log and "load:" in log
