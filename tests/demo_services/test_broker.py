"""The demo's broker: bounded topics with one queue per consumer group, on the control API."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette

from demo_services.broker import Broker, broker_routes
from demo_services.topology import parse_topology

TOPOLOGY = parse_topology({
    "topics": {"order-events": {"system": "kafka"}, "audit": {"system": "kafka"}},
    "services": {
        "checkout": {"port": 1, "routes": [{"route": "POST /orders",
                                            "publishes": ["order-events"]}]},
        "email": {"port": 2, "routes": [{"route": "POST /send"}],
                  "consumes": [{"topic": "order-events", "max_batch": 10}]},
        "shipping": {"port": 3, "routes": [{"route": "POST /ship"}],
                     "consumes": [{"topic": "order-events"}]},
    },
})


def test_every_consumer_group_gets_every_message_in_order() -> None:
    broker = Broker(TOPOLOGY)
    for i in range(3):
        assert broker.publish("order-events", {"traceparent": f"t{i}"}, i) == i
    assert [m.value for m in broker.poll("order-events", "email", 2)] == [0, 1]
    assert [m.headers["traceparent"] for m in broker.poll("order-events", "email", 5)] == ["t2"]
    assert broker.poll("order-events", "email", 5) == []  # taken: no redelivery
    assert [m.value for m in broker.poll("order-events", "shipping", 5)] == [0, 1, 2]


def test_a_full_queue_drops_its_oldest_and_counts_it() -> None:
    broker = Broker(TOPOLOGY, max_queued=2)
    for i in range(5):
        broker.publish("order-events", {}, i)
    assert [m.value for m in broker.poll("order-events", "email", 10)] == [3, 4]
    (topic,) = [t for t in broker.describe()["topics"] if t["name"] == "order-events"]
    assert topic["published"] == 5
    assert {g["name"]: (g["queued"], g["delivered"], g["dropped"])
            for g in topic["groups"]} == {"email": (0, 2, 3), "shipping": (2, 0, 3)}


def test_http_routes_publish_poll_and_say_what_was_wrong() -> None:
    app = Starlette(routes=broker_routes(Broker(TOPOLOGY)))

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://broker") as client:
            sent = await client.post("/topics/order-events/messages", json={
                "headers": {"traceparent": "00-ab-cd-01"}, "value": {"id": 7}})
            assert (sent.status_code, sent.json()) == (202, {"offset": 0})
            polled = await client.post("/topics/order-events/groups/email/poll?max=10")
            assert [(m["offset"], m["headers"], m["value"])
                    for m in polled.json()["messages"]] == [
                (0, {"traceparent": "00-ab-cd-01"}, {"id": 7})]
            assert (await client.post("/topics/nope/messages", json={})).status_code == 404
            wrong_group = await client.post("/topics/audit/groups/email/poll?max=1")
            assert wrong_group.status_code == 404 and "consumer groups: none" in wrong_group.text
            too_few = await client.post("/topics/order-events/groups/email/poll?max=0")
            assert too_few.status_code == 400
            bad = await client.post("/topics/order-events/messages", json={"headers": {"a": 1}})
            assert bad.status_code == 400 and "headers" in bad.text
            broken = await client.post("/topics/order-events/messages", content=b"{")
            assert broken.status_code == 400
            described = (await client.get("/topics")).json()["topics"][0]
            assert described["groups"][0] == {"name": "email", "queued": 0, "delivered": 1,
                                              "dropped": 0}

    asyncio.run(run())
