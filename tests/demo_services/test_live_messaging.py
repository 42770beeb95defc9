"""The shop's asynchronous path through a real collector: checkout publishes order-events (the
official OpenTelemetry SDK in twelve real service processes), email consumes them in batches
whose CONSUMER spans start their own traces and link to each message's producer; the broker is
the control API's. What a person on call would see:

- the graph draws checkout -> ``kafka: order-events`` -> email, the queue node's latency being
  the lag, one delivery per message although the batches' spans have no parent (paired
  through their links);
- an error fault at email names email, the consumer, as the root cause, not checkout;
- email down: messages wait in its queue, and when it is back it drains them, their lag
  showing how long they waited.

The shop runs without its load generator: the test places the orders, so it knows how many.
Seconds are never asserted (``bench/campaign.py`` measures them); the waits are upper bounds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from demo_harness import Shop, free_port_block, shifted_topology, start_shop
from procs import REPO, start_collector, stop
from prometheus_client.parser import text_string_to_metric_families

from demo_services.topology import load_topology

TOKEN = "live-messaging-token"
QUEUE = "kafka: order-events"
WAIT_S = 45.0  # the longest a graph or verdict may take here before the test gives up
ORDERS = 30
POLL_MS = load_topology().services["email"].consumes[0].poll_ms


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Shop]]:
    tmp = tmp_path_factory.mktemp("messaging")
    base = free_port_block(12)
    proc, url = start_collector("--topology", str(shifted_topology(tmp, base)),
                                "--scrape-interval", "1",
                                "--catalog", str(REPO / "catalog" / "catalog-info.yaml"))
    shop = None
    try:
        shop = start_shop(tmp, url, token=TOKEN, base=base)  # no load: the test orders
        yield url, shop
    finally:
        if shop is not None:
            shop.stop()
        stop(proc)


def graph(url: str, window: int = 900) -> dict[str, Any]:
    body = httpx.get(f"{url}/api/graph?window={window}", timeout=10, trust_env=False).json()
    return {"nodes": {n["id"]: n for n in body["nodes"]},
            "edges": {(e["source"], e["target"]): e for e in body["edges"]}}


def incidents(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/api/incidents", timeout=10, trust_env=False)
                .json()["incidents"])


def wait_until(what: str, check: Callable[[], Any], wait_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {wait_s:g} s")


def checkout(shop: Shop) -> None:
    response = httpx.post(shop.url("frontend") + "/checkout", trust_env=False, timeout=10)
    assert response.status_code == 200, response.text


def metric(shop: Shop, service: str, sample: str, **labels: str) -> float:
    text = httpx.get(shop.url(service) + "/metrics", trust_env=False, timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def queued(shop: Shop) -> int:
    topics = shop.client.get(shop.admin + "/topics").json()["topics"]
    (topic,) = [t for t in topics if t["name"] == "order-events"]
    (group,) = topic["groups"]
    assert group["name"] == "email" and group["dropped"] == 0
    return int(group["queued"])


class Orders:
    """Orders placed in the background, a few per second, until stopped."""

    def __init__(self, shop: Shop, per_s: float = 4.0) -> None:
        self.shop, self.gap_s = shop, 1 / per_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not self.done.wait(self.gap_s):
                # Failures while a fault is on are the point of the test; keep ordering.
                client.post(self.shop.url("frontend") + "/checkout")

    def __enter__(self) -> Orders:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def test_the_graph_draws_the_queue_with_its_lag_and_pairs_batches_through_links(
        demo: tuple[str, Shop]) -> None:
    url, shop = demo
    for _ in range(ORDERS):
        checkout(shop)

    def delivered() -> dict[str, Any] | None:
        g = graph(url)
        edge = g["edges"].get((QUEUE, "email"))
        return g if edge is not None and edge["calls"] >= ORDERS else None

    g = wait_until(f"{ORDERS} deliveries to email", delivered)
    edges, nodes = g["edges"], g["nodes"]
    # Published once each, delivered once each: the batch spans (no parent, a new trace)
    # were paired message by message through their links; paired as roots they would be one
    # call per batch and give the queue no lag.
    assert edges[("checkout", QUEUE)]["calls"] == ORDERS
    assert edges[(QUEUE, "email")]["calls"] == ORDERS
    assert ("checkout", "email") not in edges and ("user", "email") not in edges
    batches = metric(shop, "email", "messaging_process_duration_seconds_count",
                     topic="order-events", status="ok")
    consumed = metric(shop, "email", "messaging_client_consumed_messages_total",
                      topic="order-events", status="ok")
    assert consumed == ORDERS and 1 <= batches <= ORDERS
    assert metric(shop, "checkout", "messaging_client_sent_messages_total",
                  topic="order-events", status="ok") == ORDERS
    queue = nodes[QUEUE]
    assert queue["kind"] == "virtual" and queue["queue"] is True
    # Its calls are the deliveries (a publish that reached it before any delivery made it a
    # queue counts there too, once: hence at least, not equal).
    assert queue["calls"] >= ORDERS and queue["error_ratio"] == 0
    # The queue's latency is the lag: the wait for email's next poll, more than nothing and,
    # at this load, a few poll intervals at most (the median, so a slow export cannot decide).
    assert 0 < queue["p50_ms"] < 10 * POLL_MS, queue
    print(f"\nlag p50 {queue['p50_ms']:.0f} ms, p95 {queue['p95_ms']:.0f} ms; "
          f"{ORDERS} messages in {batches:.0f} batches")


def test_an_error_fault_at_email_names_email_not_checkout(demo: tuple[str, Shop]) -> None:
    url, shop = demo
    with Orders(shop):
        time.sleep(10)  # a baseline of healthy batches
        # (On a busy shared machine a starved service may be named before any fault: the
        # live diagnosis tests judge that; here only what the fault opens counts.)
        before = {i["id"] for i in incidents(url)}
        assert shop.fault("email", error_rate=0.5).status_code == 200
        try:
            listed = wait_until("incident naming email", lambda: [
                i for i in incidents(url)
                if i["root_cause"]["service"] == "email" and i["id"] not in before])
            time.sleep(5)  # time for a wrong verdict (checkout, the queue) to appear too
            named = {i["root_cause"]["service"] for i in incidents(url)
                     if i["id"] not in before}
        finally:
            shop.clear()
    (incident,) = listed
    assert incident["root_cause"]["kind"] == "errors"
    assert incident["page"]["team"] == "comms"
    # The producer is no victim: its orders succeeded, only the mail failed.
    assert "checkout" not in {d["service"] for d in incident["impacted"]}
    assert "email" in named and not {"checkout", QUEUE} & named, named
    # checkout kept taking orders: every publish succeeded.
    assert graph(url, 30)["edges"][("checkout", QUEUE)]["error_ratio"] == 0


def test_while_email_is_down_messages_wait_and_it_drains_them_when_back(
        demo: tuple[str, Shop]) -> None:
    url, shop = demo
    down_s = 4.0
    with Orders(shop):
        assert shop.fault("email", down=True).status_code == 200
        try:
            time.sleep(down_s)
            waiting = queued(shop)
            published = metric(shop, "checkout", "messaging_client_sent_messages_total",
                               topic="order-events", status="ok")
        finally:
            assert shop.clear("email").status_code == 200
        assert waiting > 0  # nobody took them: they wait in the queue
        wait_until("email to drain its queue", lambda: queued(shop) == 0)
    assert published > 0
    # They waited at least as long as email was down (less the first order's gap): the queue's
    # slowest deliveries in the last half minute show it, once the batch that drained them has
    # been exported and paired (the broker's queue empties before that).
    lag = wait_until("the drained messages' wait on the queue node", lambda: (
        lambda node: node if node["p99_ms"] >= 1000 * down_s / 2 else None)(
        graph(url, 30)["nodes"][QUEUE]), wait_s=15)
    print(f"\n{waiting} messages waited; lag p99 {lag['p99_ms']:.0f} ms after {down_s:g} s down")
