"""The diagnosis on the real demo: twelve service processes under load, a real collector
process, real timing on this machine. Two behaviours a person on call would notice:

- on a fresh start (no history), a failing payment is named with its blast radius, checkout
  and frontend, from the traces, and nothing else is named;
- a CPU hog in one service process (a noisy neighbour slowing every process on the host) is
  one ``shared-host`` incident naming the host, not one incident per slowed service.

Seconds are printed (``-s`` shows them), never asserted: ``bench/campaign.py`` measures them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from demo_harness import Shop, free_port_block, shifted_topology, start_shop
from procs import REPO, start_collector, stop

TOKEN = "live-diagnosis-token"
WAIT_S = 30.0  # the longest a verdict may take here before the test gives up
HOG_WAIT_S = 60.0  # the same for the CPU hog's shared-host incident (see the test)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Shop]]:
    # As `make demo` runs it: the collector scrapes each service's /metrics (its CPU use and
    # CPU wait among them) every second, where the shop really listens.
    tmp = tmp_path_factory.mktemp("live")
    base = free_port_block(12)
    proc, url = start_collector("--topology", str(shifted_topology(tmp, base)),
                                "--scrape-interval", "1",
                                "--catalog", str(REPO / "catalog" / "catalog-info.yaml"))
    shop = None
    try:
        shop = start_shop(tmp, url, token=TOKEN, extra=("--rate", "10"), base=base)
        yield url, shop
    finally:
        if shop is not None:
            shop.stop()
        stop(proc)


def incidents(url: str) -> list[dict[str, Any]]:
    body = httpx.get(url + "/api/incidents", timeout=10, trust_env=False).json()
    return list(body["incidents"])


def wait_for(what: str, check: Any, url: str,
             wait_s: float = WAIT_S) -> tuple[float, list[dict[str, Any]]]:
    start = time.monotonic()
    while time.monotonic() - start < wait_s:
        listed = incidents(url)
        if check(listed):
            return time.monotonic() - start, listed
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {wait_s:g} s: {incidents(url)}")


def test_fresh_start_names_payment_with_its_blast_radius_from_the_traces(
        demo: tuple[str, Shop]) -> None:
    url, shop = demo
    time.sleep(15)  # 15 s of traffic: a collector with almost no history
    assert incidents(url) == []
    assert shop.fault("payment", error_rate=0.5).status_code == 200

    def named(listed: list[dict[str, Any]]) -> bool:
        return any(i["root_cause"]["service"] == "payment" for i in listed)

    def complete(listed: list[dict[str, Any]]) -> bool:
        return any(i["root_cause"]["service"] == "payment"
                   and {"checkout", "frontend"} <= {d["service"] for d in i["impacted"]}
                   for i in listed)

    t_named, _ = wait_for("payment incident", named, url)
    t_blast, listed = wait_for("blast radius", complete, url)
    print(f"\npayment named after {t_named:.1f} s, blast radius complete {t_blast:.1f} s")
    assert len(listed) == 1, [(i["root_cause"]["service"], i["root_cause"]["kind"],
                               i["root_cause"]["evidence"]["summary"]) for i in listed]
    (incident,) = listed  # nothing else named
    rc = incident["root_cause"]
    assert (rc["service"], rc["kind"], incident["page"]["team"]) == ("payment", "errors",
                                                                     "payments")
    for impact in incident["impacted"]:
        if impact["service"] in ("checkout", "frontend"):
            # From the traces, with evidence a person can check in the trace view.
            assert impact["how"] == "traces" and impact["trace_ids"]
            assert 0 < impact["explained"] <= impact["affected"]
            assert "payment's error below them" in impact["summary"]
    shop.clear()


def test_a_cpu_hog_is_one_shared_host_incident(demo: tuple[str, Shop]) -> None:
    url, shop = demo
    before = {i["id"] for i in incidents(url)}
    time.sleep(25)  # the payment fault leaves the detection window; baselines grow
    # Four burner threads (the most the shop takes) on this 2-core host. Two, as the campaign
    # injects, slow the shop's processes only by what the scheduler's preference for waking
    # tasks leaves them: on some runs under the shared-host rule's x2 for over a minute (a
    # CI run saw no incident in 60 s; the campaign counts that sensitivity). What this test
    # checks is the grouping: a slowed host is one incident, not one per service.
    assert shop.fault("ad", cpu_hog=4).status_code == 200
    try:
        def shared(listed: list[dict[str, Any]]) -> bool:
            return any(i["root_cause"]["kind"] == "shared-host" for i in listed)

        # Seconds are the campaign's to measure; this waits long enough not to flake.
        took, _ = wait_for("shared-host incident", shared, url, wait_s=HOG_WAIT_S)
        time.sleep(10)  # give any per-service incident time to open too
        opened = [i for i in incidents(url) if i["id"] not in before]
    finally:
        shop.clear()
    print(f"\nshared-host incident after {took:.1f} s; opened: "
          f"{[(i['root_cause']['service'], i['root_cause']['kind']) for i in opened]}")
    (incident,) = opened  # one incident, not one per slowed service
    rc = incident["root_cause"]
    assert rc["kind"] == "shared-host" and rc["host"] == rc["service"]
    assert len(rc["evidence"]["services"]) >= 3
    # No Resource in the demo catalog owns the host: shown as the platform's, unowned.
    assert incident["page"]["team"] is None
    assert incident["page"]["fallback"] == "no owner — platform"
