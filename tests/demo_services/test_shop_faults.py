"""Faults injected through the control API and the CLI change what users and traces see, and
clearing them restores the shop."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from demo_harness import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    OtlpReceiver,
    Shop,
    services_in,
    trace_id_of,
)


@pytest.fixture(autouse=True)
def restored(shop: Shop) -> Iterator[None]:
    """Every test leaves the shop without faults, even when it fails."""
    yield
    assert shop.clear().status_code == 200


def _get(url: str) -> httpx.Response:
    return httpx.get(url, trust_env=False, timeout=15)


def _post(url: str) -> httpx.Response:
    return httpx.post(url, trust_env=False, timeout=15)


def test_error_rate_fails_the_service_and_its_required_callers(
    shop: Shop, receiver: OtlpReceiver
) -> None:
    result = shop.cli("fault", "payment", "--error-rate", "1")
    assert result.returncode == 0, result.stderr
    assert "error_rate=1" in result.stdout
    assert _post(shop.url("payment") + "/charge").status_code == 500
    assert _post(shop.url("checkout") + "/orders").status_code == 502
    response = _post(shop.url("frontend") + "/checkout")
    assert response.status_code == 502
    assert _get(shop.url("frontend") + "/").status_code == 200  # home does not need payment
    spans = receiver.wait_trace(
        trace_id_of(response), lambda s: {"frontend", "checkout", "payment"} <= services_in(s)
    )
    servers = {s.service: s for s in spans if s.kind == SPAN_KIND_SERVER}
    for name, status in (("payment", 500), ("checkout", 502), ("frontend", 502)):
        assert servers[name].error, name
        assert servers[name].attrs["error.type"] == str(status)
    result = shop.cli("clear", "payment")
    assert result.returncode == 0, result.stderr
    assert _post(shop.url("frontend") + "/checkout").status_code == 200


def test_latency_slows_the_service_and_timeouts_fail_the_caller(
    shop: Shop, receiver: OtlpReceiver
) -> None:
    assert shop.fault("currency", latency_ms=400).status_code == 200
    response = _get(shop.url("frontend") + "/")
    assert response.status_code == 200
    spans = receiver.wait_trace(trace_id_of(response), lambda s: "currency" in services_in(s))
    currency = next(s for s in spans if s.service == "currency")
    assert currency.duration_s >= 0.4
    # quote's latency exceeds shipping's 1000 ms client timeout: shipping answers 503.
    assert shop.fault("quote", latency_ms=1500).status_code == 200
    response = _get(shop.url("shipping") + "/estimate")
    assert response.status_code == 503
    spans = receiver.wait_trace(
        trace_id_of(response), lambda s: any(x.kind == SPAN_KIND_CLIENT for x in s)
    )
    client = next(s for s in spans if s.kind == SPAN_KIND_CLIENT)
    assert client.error and client.attrs["error.type"] == "timeout"
    assert shop.clear("quote").status_code == 200
    assert shop.clear("currency").json()["fault"]["latency_ms"] == 0
    faults = httpx.get(shop.url("currency") + "/admin/faults", trust_env=False).json()
    assert faults["fault"]["latency_ms"] == 0
    assert _get(shop.url("shipping") + "/estimate").status_code == 200


def test_down_refuses_connections_until_cleared(shop: Shop, receiver: OtlpReceiver) -> None:
    shipping = shop.url("shipping")
    old_pid = _get(shipping + "/healthz").json()["pid"]
    t_down = time.time()
    result = shop.cli("fault", "shipping", "--down")
    assert result.returncode == 0, result.stderr
    entry = next(s for s in shop.services()["services"] if s["name"] == "shipping")
    assert entry["state"] == "down" and entry["fault"]["down"] is True
    with pytest.raises(httpx.ConnectError):
        _get(shipping + "/healthz")
    response = _post(shop.url("checkout") + "/orders")
    assert response.status_code == 503
    spans = receiver.wait_trace(
        trace_id_of(response),
        lambda s: any(x.attrs.get("peer.service") == "shipping" for x in s),
    )
    call = next(s for s in spans if s.attrs.get("peer.service") == "shipping")
    assert call.error and call.attrs["error.type"] == "connection_refused"
    # The caller keeps when the down service refused it (the campaign's evidence of `down`).
    refused = _get(shop.url("checkout") + "/admin/faults").json()["evidence"]["shipping"]
    assert refused["count"] >= 1 and refused["first"][-1] >= t_down
    result = shop.cli("clear", "shipping")
    assert result.returncode == 0, result.stderr
    assert _get(shipping + "/healthz").json()["pid"] != old_pid
    assert _post(shop.url("checkout") + "/orders").status_code == 200


def test_bad_deploy_reports_the_new_version_and_errors(shop: Shop, receiver: OtlpReceiver) -> None:
    cart = shop.url("cart")
    result = shop.cli("fault", "cart", "--version", "9.9.9-bad", "--error-rate", "1")
    assert result.returncode == 0, result.stderr
    response = _get(cart + "/cart")
    assert response.status_code == 500
    spans = receiver.wait_trace(trace_id_of(response), lambda s: bool(s))
    assert spans[0].resource["service.version"] == "9.9.9-bad" and spans[0].error
    assert _get(shop.url("frontend") + "/").status_code == 502
    metrics = _get(cart + "/metrics").text
    assert 'service_version="9.9.9-bad"' in metrics
    assert shop.clear("cart").status_code == 200
    response = _get(cart + "/cart")
    assert response.status_code == 200
    spans = receiver.wait_trace(trace_id_of(response), lambda s: bool(s))
    assert {s.resource["service.version"] for s in spans} == {"2.0.2"}


def test_version_alone_is_a_bad_deploy(shop: Shop) -> None:
    response = shop.fault("product-catalog", version="3.1.0-rc1")
    assert response.status_code == 200
    assert response.json()["fault"] == {
        "error_rate": 0.5, "latency_ms": 0.0, "down": False, "version": "3.1.0-rc1",
        "cpu_hog": 0,
    }
    assert _get(shop.url("product-catalog") + "/healthz").json()["version"] == "3.1.0-rc1"


def test_virtual_dependency_faults_reach_the_callers_db_spans(
    shop: Shop, receiver: OtlpReceiver
) -> None:
    assert shop.fault("redis", error_rate=1.0).status_code == 200
    response = _get(shop.url("frontend") + "/")
    assert response.status_code == 502
    spans = receiver.wait_trace(
        trace_id_of(response), lambda s: any(x.attrs.get("db.system") == "redis" for x in s)
    )
    redis = next(s for s in spans if s.attrs.get("db.system") == "redis")
    assert redis.error and redis.attrs["error.type"] == "db_error"
    cart = next(s for s in spans if s.service == "cart" and s.kind == SPAN_KIND_SERVER)
    assert cart.error
    assert shop.clear("redis").status_code == 200
    assert shop.fault("orders", latency_ms=300).status_code == 200
    response = _post(shop.url("checkout") + "/orders")
    assert response.status_code == 200
    spans = receiver.wait_trace(
        trace_id_of(response), lambda s: any(x.attrs.get("db.system") == "postgresql" for x in s)
    )
    orders = next(s for s in spans if s.attrs.get("db.system") == "postgresql")
    assert orders.duration_s >= 0.3 and not orders.error
    result = shop.cli("clear")
    assert result.returncode == 0, result.stderr
    assert _get(shop.url("frontend") + "/").status_code == 200


def test_optional_dependency_failure_degrades_without_failing_the_caller(
    shop: Shop, receiver: OtlpReceiver
) -> None:
    assert shop.fault("ad", error_rate=1.0).status_code == 200
    assert shop.fault("recommendation", down=True).json()["state"] == "down"
    response = _get(shop.url("frontend") + "/")
    assert response.status_code == 200
    body = response.json()["dependencies"]
    assert body["ad"] == "fallback" and body["recommendation"] == "fallback"
    spans = receiver.wait_trace(
        trace_id_of(response),
        lambda s: {"frontend", "ad", "cart"} <= {x.service for x in s}
        and sum(x.service == "frontend" for x in s) >= 6,
    )
    front = next(s for s in spans if s.service == "frontend" and s.kind == SPAN_KIND_SERVER)
    assert not front.error and front.attrs["http.response.status_code"] == 200
    calls = {s.attrs["peer.service"]: s for s in spans if s.kind == SPAN_KIND_CLIENT
             and s.service == "frontend"}
    assert calls["ad"].error and calls["ad"].attrs["error.type"] == "500"
    assert calls["recommendation"].attrs["error.type"] == "connection_refused"
    assert not calls["cart"].error


def test_control_api_and_cli_reject_bad_input(shop: Shop) -> None:
    result = shop.cli("fault", "nosuch", "--error-rate", "0.1")
    assert result.returncode != 0
    assert "unknown service" in result.stderr and "payment" in result.stderr
    result = shop.cli("fault", "payment", "--error-rate", "1.5")
    assert result.returncode != 0 and "between 0 and 1" in result.stderr
    result = shop.cli("fault", "payment", "--latency-ms", "-5")
    assert result.returncode != 0 and "between 0 and" in result.stderr
    result = shop.cli("fault", "payment")
    assert result.returncode != 0 and "nothing to inject" in result.stderr
    result = shop.cli("clear", "nosuch")
    assert result.returncode != 0 and "unknown service" in result.stderr
    response = shop.fault("payment", error_rate=2)
    assert response.status_code == 400 and "error_rate" in response.json()["error"]
    response = shop.fault("orders", version="2")
    assert response.status_code == 400 and "services only" in response.json()["error"]
    result = shop.cli("fault", "ad", "--cpu-hog", "5")
    assert result.returncode != 0 and "between 0 (off) and 4" in result.stderr
    response = shop.fault("ad", cpu_hog=1.5)
    assert response.status_code == 400 and "cpu_hog must be" in response.json()["error"]
    response = shop.fault("redis", cpu_hog=1)
    assert response.status_code == 400 and "services only" in response.json()["error"]
    response = httpx.post(f"{shop.admin}/faults/payment", json={"error_rate": 1}, trust_env=False)
    assert response.status_code == 401
    response = httpx.delete(f"{shop.admin}/faults", trust_env=False,
                            headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    # A service's own admin endpoint is protected by the same token.
    response = httpx.post(shop.url("payment") + "/admin/faults/payment", json={"error_rate": 1},
                          trust_env=False)
    assert response.status_code == 401
    assert all(s["fault"]["error_rate"] == 0 and s["fault"]["cpu_hog"] == 0
               for s in shop.services()["services"])


def test_scenario_applies_its_fault_and_restores_the_shop(shop: Shop) -> None:
    result = shop.cli("scenario", "payment-outage", "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert "step 1" in result.stdout and "restored" in result.stdout
    payment = next(s for s in shop.services()["services"] if s["name"] == "payment")
    assert payment["fault"]["error_rate"] == 0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_rate(pid: int, seconds: float) -> float:
    """CPU seconds the process used per second of wall time over ``seconds``."""
    cpu0, t0 = _cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_s(pid) - cpu0) / (time.monotonic() - t0)


def test_cpu_hog_burns_cpu_in_the_service_process_until_cleared(shop: Shop) -> None:
    entry = next(s for s in shop.services()["services"] if s["name"] == "ad")
    pid = entry["pid"]
    response = shop.fault("ad", cpu_hog=1)
    assert response.status_code == 200 and response.json()["fault"]["cpu_hog"] == 1
    admin = _get(shop.url("ad") + "/admin/faults").json()
    assert admin["fault"]["cpu_hog"] == 1
    burning = _cpu_rate(pid, 1.5)
    assert burning >= 0.3, burning
    assert _get(shop.url("frontend") + "/").status_code == 200  # ad still serves
    result = shop.cli("clear", "ad")
    assert result.returncode == 0, result.stderr
    idle = _cpu_rate(pid, 1.0)
    assert idle < 0.1, (burning, idle)
    assert next(s for s in shop.services()["services"] if s["name"] == "ad")["pid"] == pid


def test_noisy_neighbour_scenario_runs_a_cpu_hog_and_restores(shop: Shop) -> None:
    result = shop.cli("scenario", "noisy-neighbour", "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert "ad: cpu_hog=2" in result.stdout
    assert "one shared-host incident, not one per service" in result.stdout
    assert "restored" in result.stdout
    ad = next(s for s in shop.services()["services"] if s["name"] == "ad")
    assert ad["fault"]["cpu_hog"] == 0


def _evidence(shop: Shop, service: str, target: str, since: float) -> tuple[list[float], int]:
    """When ``target``'s fault showed in ``service``'s process since ``since``, and how often in
    its episode (``GET /admin/faults``, ``evidence``)."""
    rec = _get(shop.url(service) + "/admin/faults").json()["evidence"].get(target)
    if rec is None:
        return [], 0
    return [t for t in rec["first"] if t >= since], rec["count"]


def test_each_process_records_when_a_fault_failed_slowed_or_refused_its_requests(
    shop: Shop,
) -> None:
    """The demo's own record of when a fault showed, which the campaign reads to tell the
    traffic's time from the collector's: a service's own errors and latency, a database's
    faults at its callers, a down service's refused calls at its callers."""
    t0 = time.time()
    assert _post(shop.url("payment") + "/charge").status_code == 200  # no fault: no record
    assert _evidence(shop, "payment", "payment", t0)[0] == []
    assert shop.fault("payment", error_rate=1).status_code == 200
    for _ in range(7):
        assert _post(shop.url("payment") + "/charge").status_code == 500
    first, count = _evidence(shop, "payment", "payment", t0)
    assert len(first) == 5 and first == sorted(first) and count == 7  # the first five kept
    assert t0 <= first[0] and first[-1] <= time.time()
    # A fault cleared and set again within EPISODE_GAP_S is the same episode: still counted.
    assert shop.clear("payment").status_code == 200
    assert shop.fault("currency", latency_ms=200).status_code == 200
    before = time.time()
    assert _get(shop.url("currency") + "/convert").status_code == 200
    slow, _ = _evidence(shop, "currency", "currency", t0)
    assert len(slow) == 1 and slow[0] >= before + 0.2  # recorded when the slow answer ended
    assert shop.fault("orders", error_rate=1.0).status_code == 200
    assert _post(shop.url("checkout") + "/orders").status_code >= 500
    db, _ = _evidence(shop, "checkout", "orders", t0)  # a database's fault: at its caller
    assert len(db) == 1
