"""Demo-shop traffic sent to a real collector with the official OpenTelemetry SDK.

Each service has its own ``TracerProvider`` (resource ``service.name``) exporting over
OTLP/HTTP with a ``BatchSpanProcessor``. A request walks the call tree: the caller's CLIENT
span is the explicit parent of the callee's SERVER span, as W3C propagation would make it.
Database calls are CLIENT spans with ``db.system`` and no server half (virtual nodes).
Times are crafted (``start_time``/``end_time``), so nothing sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

SHOP_CALLS: dict[str, list[str]] = {
    "frontend": ["product-catalog", "currency", "cart", "recommendation", "ad", "checkout"],
    "recommendation": ["product-catalog"],
    "checkout": ["cart", "currency", "payment", "shipping", "email", "db:orders"],
    "cart": ["db:redis"],
    "payment": ["fraud-detection"],
    "shipping": ["quote"],
}
OPTIONAL = {("frontend", "recommendation"), ("frontend", "ad"), ("checkout", "email")}
STEP_NS = 1_000_000  # 1 ms per hop


class Shop:
    """Senders for each service, flushed and shut down by the caller (``close``)."""

    def __init__(self, collector_url: str, calls: Mapping[str, list[str]] | None = None) -> None:
        self.endpoint = collector_url.rstrip("/") + "/v1/traces"
        self.calls = dict(SHOP_CALLS if calls is None else calls)
        self._providers: dict[str, TracerProvider] = {}

    def tracer(self, service: str) -> trace.Tracer:
        provider = self._providers.get(service)
        if provider is None:
            provider = TracerProvider(
                resource=Resource.create({"service.name": service, "service.namespace": "shop"})
            )
            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint, timeout=5))
            )
            self._providers[service] = provider
        return provider.get_tracer("conway.tests.dashboard")

    def request(self, root: str = "frontend", failing: Iterable[str] = (),
                version: str | None = None) -> bool:
        """One user request through the tree from ``root``; True if it failed."""
        start = time.time_ns() - 50 * STEP_NS
        failed, _end = self._serve(root, None, start, set(failing), version)
        return failed

    def _serve(self, service: str, parent: Context | None, start: int, failing: set[str],
               version: str | None) -> tuple[bool, int]:
        attrs = {"http.request.method": "GET", "http.route": "/"}
        if version is not None:
            attrs["service.version"] = version
        span = self.tracer(service).start_span(
            f"GET /{service}", kind=SpanKind.SERVER, context=parent, start_time=start,
            attributes=attrs,
        )
        ctx = trace.set_span_in_context(span)
        t = start + STEP_NS
        failed = service in failing
        for callee in self.calls.get(service, []):
            if callee.startswith("db:"):
                t = self._db_call(service, callee[3:], ctx, t)
                continue
            client = self.tracer(service).start_span(
                f"call {callee}", kind=SpanKind.CLIENT, context=ctx, start_time=t,
                attributes={"peer.service": callee},
            )
            callee_failed, t = self._serve(
                callee, trace.set_span_in_context(client), t + STEP_NS // 2, failing, version
            )
            if callee_failed:
                client.set_status(Status(StatusCode.ERROR, f"{callee} failed"))
                if (service, callee) not in OPTIONAL:
                    failed = True
            client.end(end_time=t + STEP_NS // 2)
            t += STEP_NS
        if failed:
            span.set_status(Status(StatusCode.ERROR, "request failed"))
        span.end(end_time=t)
        return failed, t + STEP_NS

    def _db_call(self, service: str, db: str, ctx: Context, t: int) -> int:
        attrs: dict[str, str] = {"db.system": "postgresql" if db == "orders" else "redis"}
        if db == "orders":
            attrs["db.namespace"] = "orders"
            attrs["db.name"] = "orders"
        span = self.tracer(service).start_span(
            f"{db} query", kind=SpanKind.CLIENT, context=ctx, start_time=t, attributes=attrs
        )
        span.end(end_time=t + STEP_NS)
        return t + 2 * STEP_NS

    def flush(self) -> None:
        for provider in self._providers.values():
            provider.force_flush(timeout_millis=10_000)

    def close(self) -> None:
        for provider in self._providers.values():
            provider.shutdown()
        self._providers.clear()
