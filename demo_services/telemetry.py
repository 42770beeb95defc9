"""Traces and metrics of one demo service process.

Traces: an OpenTelemetry SDK TracerProvider per service version, exported over OTLP/HTTP
(protobuf) in batches. A bad deploy swaps the provider (new ``service.version`` resource) and
retires the old one, which keeps exporting what it already holds until shutdown. The resource
names the host (``host.name``: the machine's hostname unless ``OTEL_RESOURCE_ATTRIBUTES`` sets
one, which wins) and the process (``process.pid``), so that services slowed together by a busy
shared host can be recognised as one incident (see ``demo_services.cpuhog``).

Metrics: a per-process ``CollectorRegistry`` with Prometheus-named families:
``http_server_requests_total`` and ``http_server_request_duration_seconds`` by ``method``,
``route``, ``status_code``; ``http_client_requests_total`` and
``http_client_request_duration_seconds`` by ``peer`` and ``status`` (the HTTP status code, ``ok``
for a database call that succeeded, otherwise the span's ``error.type`` such as ``timeout``);
``messaging_client_sent_messages_total`` and ``messaging_client_operation_duration_seconds``
by ``topic`` and ``status`` (``ok`` or the error), ``messaging_client_consumed_messages_total``
and ``messaging_process_duration_seconds`` (one observation per batch) by ``topic`` and
``status`` (``ok``, ``error``), ``messaging_client_polls_total`` by ``topic`` and ``status``;
``service_build_info`` (1, labelled with the running ``service_version``); the standard
``process_*`` families (``process_cpu_seconds_total`` and others) and, on Linux,
``process_cpu_wait_seconds_total``: the seconds this process's threads were runnable but
waiting for a CPU (the kernel's schedstat run delay, summed over live threads), so that a
service slowed by a busy host can be told from one slow on its own (``collector.cpu``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, TraceState
from opentelemetry.util.types import Attributes
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

NAMESPACE = "shop"
ENVIRONMENT = "demo"
# Export often (the dashboard is live) and hold enough to ride out a slow collector: at the
# demo's load a process makes well under 1,000 spans/s, so 8,192 queued is many seconds.
SCHEDULE_DELAY_MS = 150
MAX_QUEUE_SIZE = 8192
MAX_EXPORT_BATCH = 512
EXPORT_TIMEOUT_S = 2.0
# Retired providers (old versions) still flushing; older ones are shut down beyond this.
MAX_RETIRED_PROVIDERS = 3
# Head sampling: the share of traces kept (1: all), from this variable (`up --sample P`).
SAMPLE_ENV = "CONWAY_SAMPLE"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def traces_endpoint(collector: str) -> str:
    return collector.rstrip("/") + "/v1/traces"


def process_resource() -> Resource:
    """``host.name`` and ``process.pid`` of this process, as defaults: merged *under*
    ``Resource.create`` (whose attributes include ``OTEL_RESOURCE_ATTRIBUTES``), so a
    ``host.name`` set in the environment wins over the hostname."""
    return Resource({"host.name": socket.gethostname(), "process.pid": os.getpid()})


class ThresholdSampler(Sampler):
    """Keeps a share ``p`` of traces, as OpenTelemetry's consistent probability sampler: a
    trace is kept when the randomness of its id (its last 56 bits) is at least the threshold
    ``T = (1 - p) * 2**56``, and the threshold is recorded in the W3C tracestate as
    ``ot=th:<hex>`` (https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/),
    so whoever counts the kept spans knows each stands for ``1/p``. Child spans follow their
    parent's decision and tracestate (`ParentBased`)."""

    def __init__(self, p: float) -> None:
        if not 0 < p <= 1:
            raise ValueError(f"sampling share must be in (0, 1], got {p}")
        self.p = p
        self.threshold = min((1 << 56) - 1, round((1 - p) * (1 << 56)))
        self.th = format(self.threshold, "014x").rstrip("0") or "0"

    def should_sample(self, parent_context: object, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: object = None, trace_state: TraceState | None = None,
                      ) -> SamplingResult:
        state = trace_state or TraceState()
        entry = f"th:{self.th}"
        state = state.update("ot", entry) if "ot" in state else state.add("ot", entry)
        if trace_id & ((1 << 56) - 1) >= self.threshold:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        return SamplingResult(Decision.DROP, None, state)

    def get_description(self) -> str:
        return f"ThresholdSampler{{{self.p}}}"


def sampler_from_env() -> Sampler | None:
    """``ParentBased(ThresholdSampler(p))`` when ``CONWAY_SAMPLE`` asks for a share below 1."""
    raw = os.environ.get(SAMPLE_ENV)
    if not raw:
        return None
    p = float(raw)
    return None if p >= 1 else ParentBased(ThresholdSampler(p))


def make_tracer_provider(
    service: str, version: str, instance_id: str, collector: str
) -> TracerProvider:
    resource = process_resource().merge(
        Resource.create(
            {
                "service.name": service,
                "service.version": version,
                "service.namespace": NAMESPACE,
                "service.instance.id": instance_id,
                "deployment.environment.name": ENVIRONMENT,
            }
        )
    )
    sampler = sampler_from_env()
    provider = (TracerProvider(resource=resource, sampler=sampler) if sampler is not None
                else TracerProvider(resource=resource))
    exporter = OTLPSpanExporter(endpoint=traces_endpoint(collector), timeout=EXPORT_TIMEOUT_S)
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=MAX_QUEUE_SIZE,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=MAX_EXPORT_BATCH,
            export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
        )
    )
    return provider


class Tracing:
    """The current provider of a service plus the retired ones of earlier versions."""

    def __init__(self, service: str, version: str, collector: str) -> None:
        self.service = service
        self.collector = collector
        self.instance_id = f"{service}-{uuid.uuid4().hex[:12]}"
        self.version = version
        self.provider = make_tracer_provider(service, version, self.instance_id, collector)
        self._retired: list[TracerProvider] = []

    def set_version(self, version: str) -> bool:
        """Switch new spans to ``version``; returns whether anything changed."""
        if version == self.version:
            return False
        old = self.provider
        self.provider = make_tracer_provider(
            self.service, version, self.instance_id, self.collector
        )
        self.version = version
        self._retired.append(old)
        while len(self._retired) > MAX_RETIRED_PROVIDERS:
            self._retired.pop(0).shutdown()
        return True

    def shutdown(self) -> None:
        """Flush and stop every provider (blocks up to the export timeout each)."""
        for provider in [*self._retired, self.provider]:
            provider.shutdown()
        self._retired.clear()


TASKS = Path("/proc/self/task")


def cpu_wait_seconds(tasks: Path = TASKS) -> float | None:
    """Seconds the live threads of this process spent runnable, waiting for a CPU (the
    second field of ``/proc/self/task/*/schedstat``); None where the kernel has no schedstat.
    A thread that ends takes its share with it: the counter can fall, which Prometheus (and
    Conway) read as a reset."""
    total, seen = 0, False
    try:
        entries = list(tasks.iterdir())
    except OSError:
        return None
    for task in entries:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # the thread ended between the listing and the read
        if len(fields) >= 2 and fields[1].isdigit():
            total += int(fields[1])
            seen = True
    return total / 1e9 if seen else None


class CpuWaitCollector(Collector):
    """``process_cpu_wait_seconds_total`` (see the module doc)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        wait = cpu_wait_seconds()
        if wait is None:
            return
        family = CounterMetricFamily(
            "process_cpu_wait_seconds",
            "Seconds this process's threads were runnable but waiting for a CPU "
            "(schedstat run delay).")
        family.add_metric([], wait)
        yield family


class ServiceMetrics:
    """The Prometheus instruments of one service, in their own registry."""

    def __init__(self, service: str, version: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(CpuWaitCollector())
        self.server_requests = Counter(
            "http_server_requests",
            "Inbound HTTP requests handled, by route and response status code.",
            ["method", "route", "status_code"],
            registry=self.registry,
        )
        self.server_duration = Histogram(
            "http_server_request_duration_seconds",
            "Time to answer inbound HTTP requests.",
            ["method", "route", "status_code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.client_requests = Counter(
            "http_client_requests",
            "Outbound calls to services and databases, by peer and outcome.",
            ["peer", "status"],
            registry=self.registry,
        )
        self.client_duration = Histogram(
            "http_client_request_duration_seconds",
            "Time of outbound calls to services and databases.",
            ["peer", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.sent_messages = Counter(
            "messaging_client_sent_messages",
            "Messages published to the broker, by topic and outcome.",
            ["topic", "status"],
            registry=self.registry,
        )
        self.send_duration = Histogram(
            "messaging_client_operation_duration_seconds",
            "Time to publish one message to the broker.",
            ["topic", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.consumed_messages = Counter(
            "messaging_client_consumed_messages",
            "Messages taken from the broker and processed, by topic and outcome.",
            ["topic", "status"],
            registry=self.registry,
        )
        self.process_duration = Histogram(
            "messaging_process_duration_seconds",
            "Time to process one batch of messages.",
            ["topic", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.polls = Counter(
            "messaging_client_polls",
            "Polls of the broker, by topic and outcome (ok, unreachable, or the HTTP status).",
            ["topic", "status"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "service_build_info",
            "Always 1; labels name the running service version.",
            ["service_name", "service_version"],
            registry=self.registry,
        )
        self.service = service
        self.version = version
        self.build_info.labels(service, version).set(1)

    def set_version(self, version: str) -> None:
        if version != self.version:
            self.build_info.remove(self.service, self.version)
            self.version = version
            self.build_info.labels(self.service, version).set(1)
