"""Overload: past its in-flight limits the receiver answers 503 with Retry-After (bounded
memory, no dropped connections), and the official SDK exporter, retrying as told, gets every
span counted once the pressure is gone."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from google.rpc.status_pb2 import Status
from live_collector import PB, Collector, ValidTraffic, metric, pairs

MAX_BODY = 100_000
MAX_BYTES = 150_000


@pytest.fixture
def busy_collector() -> Iterator[str]:
    c = Collector("--max-inflight", "2", "--max-body-bytes", str(MAX_BODY),
                  "--max-inflight-bytes", str(MAX_BYTES), "--body-timeout", "120",
                  "--pairing-ttl", "60")
    try:
        yield c.url
    finally:
        c.stop()


def hold(url: str, declared: int, send: int) -> socket.socket:
    """A client that declares a body of ``declared`` bytes, sends ``send`` and waits."""
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
              + f"\r\nContent-Length: {declared}\r\n\r\n".encode() + b"\x00" * send)
    return s


def wait_metric(url: str, name: str, at_least: float) -> float:
    deadline = time.monotonic() + 20
    value = metric(url, name)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
        value = metric(url, name)
    return value


def overloaded(url: str) -> float:
    return metric(url, "conway_requests_rejected_total", reason="overloaded")


def test_full_receiver_answers_503_and_the_sdk_retries_until_counted(
        busy_collector: str) -> None:
    url = busy_collector
    holders: list[socket.socket] = []
    try:
        # One slow upload holds 90 kB of body: a second body of 70 kB would pass the budget.
        holders.append(hold(url, MAX_BODY, 90_000))
        assert wait_metric(url, "conway_ingest_inflight_bytes", 90_000) >= 90_000
        body = pairs("over-bytes", 600)
        assert 60_000 < len(body) <= MAX_BODY
        r = httpx.post(url + "/v1/traces", content=body, headers=PB)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert f"bytes of request bodies already held (limit {MAX_BYTES})" in Status.FromString(
            r.content).message
        # A second held request fills the request slots: anything else is told to come back.
        holders.append(hold(url, MAX_BODY, 10))
        assert wait_metric(url, "conway_ingest_inflight_requests", 2) == 2
        r = httpx.post(url + "/v1/traces", content=pairs("over-slots", 1), headers=PB)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "2 requests already in progress (limit 2)" in Status.FromString(r.content).message
        z = httpx.post(url + "/api/v2/spans", json=[])
        assert z.status_code == 503 and z.headers["retry-after"] == "1"
        refused_so_far = overloaded(url)
        assert refused_so_far == 3

        with ValidTraffic(url, "retry", minimum=5, wait_first=False) as valid:
            # The SDK's first export is refused, then it waits Retry-After and tries again.
            deadline = time.monotonic() + 20
            while overloaded(url) == refused_so_far and time.monotonic() < deadline:
                time.sleep(0.02)
            assert overloaded(url) > refused_so_far
            for s in holders:  # the slow clients give up: their slots and bytes are freed
                s.close()
            holders.clear()
        valid.assert_all_counted()
        assert metric(url, "conway_ingest_inflight_requests") == 0
        assert metric(url, "conway_ingest_inflight_bytes") == 0
        assert metric(url, "conway_requests_rejected_total", reason="client_disconnected") == 2
    finally:
        for s in holders:
            s.close()
