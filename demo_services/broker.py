"""The demo's message broker: the topics of ``catalog/topology.yaml``, held in the control
process and served on the control API (``up``'s, or ``control``'s in containers).

It stands in for Kafka and, like Kafka, sends no spans: the producers' PRODUCER spans and the
consumers' CONSUMER spans are the whole trace of a message, and the collector draws the queue
between them from their ``messaging.*`` attributes. Each consuming service is one consumer
group with its own queue per topic; a published message goes to every group's queue
(fan-out). A queue holds at most ``MAX_QUEUED`` messages: past that the oldest is dropped and
counted (as Kafka's retention would drop it), never silently. A poll takes the messages it
returns (auto-commit): there is no redelivery.

  POST /topics/{topic}/messages                    JSON {"headers": {..}, "value": any}
                                                   -> 202 {"offset": N}
  POST /topics/{topic}/groups/{group}/poll?max=N   -> {"messages": [{"offset", "headers",
                                                      "value", "published_at"}]}
  GET  /topics                                     per topic: published; per group: queued,
                                                   delivered, dropped

404 for an unknown topic or group (the message lists the valid ones), 400 for a bad body.
These routes take no token: they are bound where the control API is (127.0.0.1, or the
containers' network), and a queue is bounded whoever fills it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from demo_services.topology import Topology

MAX_QUEUED = 10_000  # messages per consumer group and topic
MAX_POLL = 1_000  # messages one poll may take
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(slots=True)
class Message:
    offset: int
    headers: dict[str, str]
    value: Any
    published_at: float

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "headers": self.headers, "value": self.value,
                "published_at": self.published_at}


@dataclass(slots=True)
class Group:
    queue: deque[Message] = field(default_factory=deque)
    delivered: int = 0
    dropped: int = 0


@dataclass(slots=True)
class Topic:
    groups: dict[str, Group]
    published: int = 0


class Broker:
    """Bounded in-memory topics, one queue per (topic, consumer group); see the module doc."""

    def __init__(self, topology: Topology, max_queued: int = MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self.topics = {
            name: Topic({group: Group() for group in topology.consumers_of(name)})
            for name in topology.topics
        }

    def publish(self, topic: str, headers: dict[str, str], value: Any,
                now: float | None = None) -> int:
        t = self.topics[topic]
        offset = t.published
        t.published += 1
        message = Message(offset, headers, value, time.time() if now is None else now)
        for group in t.groups.values():
            if len(group.queue) >= self.max_queued:
                group.queue.popleft()
                group.dropped += 1
            group.queue.append(message)
        return offset

    def poll(self, topic: str, group: str, max_messages: int) -> list[Message]:
        g = self.topics[topic].groups[group]
        out = [g.queue.popleft() for _ in range(min(max_messages, len(g.queue)))]
        g.delivered += len(out)
        return out

    def describe(self) -> dict[str, Any]:
        return {"topics": [
            {"name": name, "published": t.published, "max_queued": self.max_queued,
             "groups": [{"name": g, "queued": len(grp.queue), "delivered": grp.delivered,
                         "dropped": grp.dropped} for g, grp in t.groups.items()]}
            for name, t in self.topics.items()]}


def broker_routes(broker: Broker) -> list[Route]:
    """The broker's routes, mounted on the control API."""

    def unknown_topic(topic: str) -> Response:
        return _error(404, f"unknown topic {topic!r}; topics: {', '.join(broker.topics)}")

    async def publish(request: Request) -> Response:
        topic = request.path_params["topic"]
        if topic not in broker.topics:
            return unknown_topic(topic)
        raw = await request.body()
        if len(raw) > MAX_MESSAGE_BYTES:
            return _error(413, f"a message is at most {MAX_MESSAGE_BYTES} bytes")
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return _error(400, "the body is not valid JSON")
        headers = body.get("headers", {}) if isinstance(body, dict) else None
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            return _error(400, 'send {"headers": {name: text}, "value": ...}')
        offset = broker.publish(topic, headers, body.get("value"))
        return JSONResponse({"offset": offset}, status_code=202)

    async def poll(request: Request) -> Response:
        topic, group = request.path_params["topic"], request.path_params["group"]
        if topic not in broker.topics:
            return unknown_topic(topic)
        groups = broker.topics[topic].groups
        if group not in groups:
            return _error(404, f"{group!r} does not consume {topic}; its consumer groups: "
                          f"{', '.join(groups) or 'none'}")
        try:
            limit = int(request.query_params.get("max", "1"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_POLL:
            return _error(400, f"max must be an integer in 1..{MAX_POLL}")
        return JSONResponse({"messages": [m.to_json() for m in broker.poll(topic, group, limit)]})

    async def topics(request: Request) -> Response:
        return JSONResponse(broker.describe())

    return [
        Route("/topics", topics, methods=["GET"]),
        Route("/topics/{topic}/messages", publish, methods=["POST"]),
        Route("/topics/{topic}/groups/{group}/poll", poll, methods=["POST"]),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
