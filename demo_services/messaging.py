"""A service's side of the demo's topics: publishing after a route's calls, and batch consumers.

Spans follow OpenTelemetry's messaging semantic conventions
(https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/):

- publishing is a PRODUCER span ``send <topic>`` (``messaging.operation.type=send``; the
  conventions' older value ``publish`` is deprecated) inside the request's trace, and the W3C
  trace context of that span travels in the message's headers;
- a batch is one CONSUMER span ``process <topic>`` that starts a new trace, with one span link
  per message to the context found in its headers, ``messaging.batch.message_count`` and
  ``messaging.consumer.group.name`` (the service's name).

The broker (``demo_services.broker``) is reached over HTTP at ``$CONWAY_BROKER_URL`` (``up``
sets it to its control API; containers to the ``control`` container), default the control
API's usual address. A consumer applies its service's fault to each batch: ``latency_ms`` is
added before processing, ``error_rate`` (or a bad deploy) fails that share of batches (the
span is ERROR, the messages are counted as failed and not redelivered). A stopped consumer
leaves messages in its queue: they wait, their lag grows, and it drains them when it is back
(a full batch is followed by the next poll at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from demo_services.defaults import DEFAULT_ADMIN
from demo_services.topology import ConsumerSpec

if TYPE_CHECKING:
    from demo_services.service import DemoService

BROKER_ENV = "CONWAY_BROKER_URL"
PUBLISH_TIMEOUT_S = 1.0
POLL_TIMEOUT_S = 2.0
_propagator = TraceContextTextMapPropagator()


def broker_from_env() -> str:
    return (os.environ.get(BROKER_ENV) or DEFAULT_ADMIN).rstrip("/")


class Producer:
    """Publishes one message to a topic inside a PRODUCER span of the current trace."""

    def __init__(self, service: DemoService, broker: str) -> None:
        self.service = service
        self.broker = broker
        parts = urlsplit(broker)
        self.address = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)

    async def send(self, topic: str, tracer: trace.Tracer, value: dict[str, Any]) -> bool:
        system = self.service.topology.topics[topic].system
        started = time.perf_counter()
        span = tracer.start_span(
            f"send {topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": system,
                "messaging.destination.name": topic,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "server.address": self.address,
                "server.port": self.port,
            },
        )
        error: str | None = None
        with trace.use_span(span, end_on_exit=False):
            headers: dict[str, str] = {}
            _propagator.inject(headers)
            try:
                response = await self.service.client.post(
                    f"{self.broker}/topics/{topic}/messages",
                    json={"headers": headers, "value": value}, timeout=PUBLISH_TIMEOUT_S)
                if response.status_code != 202:
                    error = str(response.status_code)
                else:
                    span.set_attribute("messaging.message.id", str(response.json()["offset"]))
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.ConnectError:
                error = "connection_refused"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(StatusCode.ERROR, f"{topic}: {error}")
        span.end()
        metrics = self.service.metrics
        metrics.sent_messages.labels(topic, error or "ok").inc()
        metrics.send_duration.labels(topic, error or "ok").observe(
            time.perf_counter() - started)
        return error is None


class BatchConsumer:
    """Polls one topic for its service's consumer group and processes what comes in batches."""

    def __init__(self, service: DemoService, spec: ConsumerSpec, broker: str) -> None:
        self.service = service
        self.spec = spec
        self.url = (f"{broker}/topics/{spec.topic}/groups/{service.spec.name}/poll"
                    f"?max={spec.max_batch}")
        self.system = service.topology.topics[spec.topic].system

    async def run(self) -> None:
        """Until cancelled: poll, process a non-empty batch, wait ``poll_ms`` unless the batch
        was full (a backlog drains without waiting)."""
        while True:
            messages = await self._poll()
            if messages:
                await self.process(messages)
            if len(messages) < self.spec.max_batch:
                await asyncio.sleep(self.spec.poll_ms / 1000)

    async def _poll(self) -> list[dict[str, Any]]:
        try:
            response = await self.service.client.post(self.url, timeout=POLL_TIMEOUT_S)
        except httpx.HTTPError:
            self.service.metrics.polls.labels(self.spec.topic, "unreachable").inc()
            return []
        if response.status_code != 200:
            self.service.metrics.polls.labels(self.spec.topic, str(response.status_code)).inc()
            return []
        self.service.metrics.polls.labels(self.spec.topic, "ok").inc()
        return list(response.json()["messages"])

    async def process(self, messages: list[dict[str, Any]]) -> None:
        service = self.service
        topic = self.spec.topic
        links = []
        for message in messages:
            context = trace.get_current_span(
                _propagator.extract(carrier=message.get("headers") or {})).get_span_context()
            if context.is_valid:
                links.append(Link(context, {"messaging.message.id": str(message["offset"])}))
        started = time.perf_counter()
        span = service.tracer().start_span(
            f"process {topic}",
            context=Context(),  # a batch starts its own trace; its messages are its links
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": self.system,
                "messaging.destination.name": topic,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.consumer.group.name": service.spec.name,
                "messaging.batch.message_count": len(messages),
            },
        )
        error: str | None = None
        fault = service.fault
        try:
            if fault.latency_ms > 0:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.error_rate > 0 and service.rng.random() < fault.error_rate:
                error = "injected_failure"
            elif service.spec.work_ms > 0:
                await asyncio.sleep(service.spec.work_ms * service.rng.uniform(0.5, 1.5) / 1000)
        finally:
            if error is not None:
                span.set_attribute("error.type", error)
                span.set_status(StatusCode.ERROR,
                                f"{service.spec.name} {service.version}: injected failure")
            span.end()
            if error is not None or fault.latency_ms > 0:
                service.evidence.record(service.spec.name)
            status = "ok" if error is None else "error"
            service.metrics.consumed_messages.labels(topic, status).inc(len(messages))
            service.metrics.process_duration.labels(topic, status).observe(
                time.perf_counter() - started)


@contextlib.asynccontextmanager
async def consuming(service: DemoService) -> AsyncIterator[None]:
    """Runs the service's batch consumers for the duration of the block."""
    broker = broker_from_env()
    tasks = [asyncio.create_task(BatchConsumer(service, spec, broker).run(),
                                 name=f"consume-{spec.topic}")
             for spec in service.spec.consumes]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
