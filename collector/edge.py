"""The HTTP edge: what every request passes before a receiver or the read API sees it.

Bodies are read as a stream (chunked uploads work) and refused (`BodyTooLarge`, answered 413)
as soon as they pass ``max_body_bytes``; a body not complete within ``body_timeout_s`` (a
client trickling it) is refused (`BodyTimeout`, answered 408 and its connection closed).
Admission is bounded (`Admission`): more than ``max_inflight`` receiver requests, or bodies
held in memory past ``max_inflight_bytes``, answer 503 with ``Retry-After`` (the OTLP exporters
retry on it). With an ingest token, the receivers answer 401 to a request without
``Authorization: Bearer <token>`` (`unauthorized`). `RequestCounter` counts every answered
request by path and status and marks every response ``X-Content-Type-Options: nosniff``.

Connections are bounded before any request reaches the app (`ConnectionGuard`, served with
its uvicorn protocol): at most ``MAX_CONNECTIONS`` (1024; ``--max-connections``) open, of
them at most ``MAX_IDLE_CONNECTIONS`` (512; ``--max-idle-connections``) without a request in
progress, the oldest idle one closed to make room for a new connection; a connection whose
request headers are not complete within ``HEADER_TIMEOUT_S`` (5 s; ``--header-timeout``) is
closed, and so is one idle ``KEEP_ALIVE_TIMEOUT_S`` (5 s; ``--keep-alive-timeout``) after a
response; past the connection limit with none idle a new connection is answered 503 with
``Retry-After`` and closed. So idle or slow connections, however many, never lock out ingest
or ``/healthz``: ``conway_http_rejected_total{reason="connection_limit"}`` and
``conway_http_connections_closed_total{reason}`` count what the guard refused and closed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Collection, Iterator
from typing import Any, ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from collector.config import (
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_IDLE_CONNECTIONS,
)
from collector.exposition import IngestCounters

RETRY_AFTER_S = 1
# The challenge a receiver's 401 carries in ``WWW-Authenticate``.
WWW_AUTHENTICATE = 'Bearer realm="conway-ingest"'


class BodyTooLarge(Exception):
    """The body passed its size limit (answer 413 and close the connection)."""


class BodyTimeout(Exception):
    """The body was not complete in time (answer 408 and close the connection)."""


class Overloaded(Exception):
    """Admission's byte budget is spent (answer 503 with ``Retry-After``)."""


class Admission(Collector):
    """Bounds what the receivers hold: requests in progress and the bytes of their bodies.

    Not thread-safe: used from the event loop only.
    """

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def busy(self) -> str | None:
        """Why a new request cannot start now, or None (then call `enter`)."""
        if self.requests >= self.max_requests:
            return (f"collector busy: {self.requests} requests already in progress (limit "
                    f"{self.max_requests}); retry after {RETRY_AFTER_S} s")
        return None

    def enter(self) -> None:
        self.requests += 1

    def reserve(self, n: int) -> None:
        """Account ``n`` more body bytes held; `Overloaded` when over the byte budget."""
        if self.bytes + n > self.max_bytes:
            raise Overloaded(
                f"collector busy: {self.bytes} bytes of request bodies already held (limit "
                f"{self.max_bytes}); retry after {RETRY_AFTER_S} s")
        self.bytes += n

    def leave(self, held: int) -> None:
        self.requests -= 1
        self.bytes -= held

    def collect(self) -> Iterator[Metric]:
        """``prometheus_client`` Collector: what is held now, next to the limits."""
        for name, doc, value in (
            ("conway_ingest_inflight_requests", "Receiver requests in progress", self.requests),
            ("conway_ingest_inflight_bytes", "Request-body bytes held by the receivers",
             self.bytes),
            ("conway_ingest_max_inflight_requests", "Limit of receiver requests in progress",
             self.max_requests),
            ("conway_ingest_max_inflight_bytes", "Limit of request-body bytes held",
             self.max_bytes),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


async def read_body(request: Request, limit: int, timeout_s: float | None = None,
                    admission: Admission | None = None, held: list[int] | None = None) -> bytes:
    """The whole body, refused (``BodyTooLarge``) as soon as it passes ``limit`` bytes, or
    (``BodyTimeout``) when not complete within ``timeout_s``. With ``admission``, every chunk
    is reserved against its byte budget (``Overloaded``) and added to ``held[0]``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"request body of {length} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body of more than {limit} bytes")
            if admission is not None and held is not None:
                admission.reserve(len(chunk))
                held[0] += len(chunk)
            chunks.append(chunk)

    if timeout_s is None:
        await read()
    else:
        try:
            async with asyncio.timeout(timeout_s):
                await read()
        except TimeoutError:
            raise BodyTimeout(
                f"request body not received within {timeout_s:g} s ({size} bytes arrived); "
                f"send the whole body at once, or check the network between exporter and "
                f"collector"
            ) from None
    return b"".join(chunks)


def unauthorized(request: Request, ingest_token: bytes | None) -> str | None:
    """Why the request may not ingest (a message), or None when it may (always, without an
    ingest token)."""
    if ingest_token is None:
        return None
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                          ingest_token):
        return None
    what = "no Authorization header" if not given else "a wrong or malformed token"
    return (f"this collector needs an ingest token and the request had {what}; send "
            f"'Authorization: Bearer <token>' (OpenTelemetry SDKs: "
            f"OTEL_EXPORTER_OTLP_HEADERS=\"authorization=Bearer <token>\")")


class RequestCounter:
    """ASGI middleware counting answered requests by path and status: ``paths`` by name
    (the receivers' and the read API's), ``/api/services/NAME`` as ``/api/services``, others
    as ``other`` (bounded labels)."""

    def __init__(self, app: ASGIApp, counters: IngestCounters, paths: Collection[str]) -> None:
        self.app = app
        self.counters = counters
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        label = path if path in self.paths else (
            "/api/services" if path.startswith("/api/services/") else "other"
        )

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counters.request(label, message["status"])
                # No response may be sniffed into HTML, whatever text it echoes.
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, counting_send)


# -- the connection guard: what the server holds before a request reaches the app -----------

# The connection guard's defaults (MAX_CONNECTIONS, MAX_IDLE_CONNECTIONS, HEADER_TIMEOUT_S,
# KEEP_ALIVE_TIMEOUT_S) are `EdgeConfig`'s, in collector.config.
# Seconds a refused connection stays half-closed after its 503 so the client reads it (closing
# at once, with the client's request unread, sends a reset that can discard the answer).
REFUSED_LINGER_S = 1.0


class ConnectionGuard(Collector):
    """Bounds the connections the HTTP server holds, and counts what it closes and refuses.

    uvicorn's own ``limit_concurrency`` counts idle connections and answers every request 503
    while they stay open, which a connection that never sends a request may do for ever.
    Served with `protocol` instead, a connection is *idle* until its request's headers are
    complete and again after each response; idle ones are closed after ``header_timeout_s``
    (``conway_http_connections_closed_total{reason="header_timeout"}``) or uvicorn's keep-alive
    timeout (``reason="keep_alive_timeout"``), and past ``max_idle`` the oldest is closed to
    make room (``reason="idle_evicted"``). A connection past ``max_connections`` when none is
    idle gets a 503 with ``Retry-After`` and ``Connection: close`` before anything is read
    (``conway_http_rejected_total{reason="connection_limit"}``).

    Event loop only; ``collect`` (run from a worker thread) reads plain counts.
    """

    CLOSE_REASONS = ("header_timeout", "keep_alive_timeout", "idle_evicted")

    def __init__(self, max_connections: int = MAX_CONNECTIONS,
                 max_idle: int = MAX_IDLE_CONNECTIONS,
                 header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
        self.max_connections = max_connections
        self.max_idle = min(max_idle, max_connections)
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.idle: dict[GuardedH11Protocol, None] = {}  # oldest first
        self.rejected = 0
        self.closed = dict.fromkeys(self.CLOSE_REASONS, 0)

    def protocol(self) -> type[GuardedH11Protocol]:
        """The uvicorn protocol class (``uvicorn.Config(http=...)``) serving under this guard."""
        guard = self

        class Guarded(GuardedH11Protocol):
            pass

        Guarded.guard = guard
        return Guarded

    def admit(self) -> bool:
        """Whether a new connection may be served (then it counts as open and idle), closing
        the oldest idle connection to make room when a limit is reached."""
        if self.idle and (len(self.idle) >= self.max_idle or self.open >= self.max_connections):
            next(iter(self.idle)).close_idle("idle_evicted")
        if self.open >= self.max_connections:
            self.rejected += 1
            return False
        self.open += 1
        return True

    def refusal(self) -> bytes:
        body = json.dumps({"error": f"collector busy: {self.open} connections open (limit "
                                    f"{self.max_connections}); retry after {RETRY_AFTER_S} s"})
        return (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_S}\r\n"
                f"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}").encode()

    def collect(self) -> Iterator[Metric]:
        """``prometheus_client`` Collector: refusals and closes, connections held, limits."""
        rejected = CounterMetricFamily(
            "conway_http_rejected", "Connections answered 503 before a request was read, by "
            "reason", labels=["reason"])
        rejected.add_metric(["connection_limit"], self.rejected)
        yield rejected
        closed = CounterMetricFamily(
            "conway_http_connections_closed", "Connections closed by the collector without a "
            "request in progress, by reason", labels=["reason"])
        for reason, n in list(self.closed.items()):
            closed.add_metric([reason], n)
        yield closed
        for name, doc, value in (
            ("conway_http_connections_open", "Connections open", self.open),
            ("conway_http_connections_idle", "Connections open without a request in progress",
             len(self.idle)),
            ("conway_http_max_connections", "Limit of connections open", self.max_connections),
            ("conway_http_max_idle_connections", "Limit of idle connections open",
             self.max_idle),
            ("conway_http_header_timeout_seconds", "Seconds to send a request's headers",
             self.header_timeout_s),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a `ConnectionGuard` (see there); use
    `ConnectionGuard.protocol`, which binds ``guard``."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = "new"  # then "refused", or "idle" / "active" until "closed"
        self._timer: asyncio.TimerHandle | None = None
        self._cycle_seen: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit():
            self._state = "refused"
            self.transport = transport
            transport.write(self.guard.refusal())
            if transport.can_write_eof():
                transport.write_eof()
            self._timer = self.loop.call_later(REFUSED_LINGER_S, transport.close)
            return
        super().connection_made(transport)
        self._go_idle()
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._state == "refused":
            return  # answered already; only waiting for the client to read it
        if self._state == "idle" and self._timer is None:
            self._start_header_timer()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self._state == "idle" and self.cycle is not self._cycle_seen:
            self._go_active()  # headers complete: the request is the app's now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._state == "active" and not self.transport.is_closing():
            if self.cycle is self._cycle_seen:
                self._go_idle()  # uvicorn's keep-alive timer runs until the next byte
            else:
                self._cycle_seen = self.cycle  # a pipelined request started at once

    def timeout_keep_alive_handler(self) -> None:
        if self._state == "idle" and not self.transport.is_closing():
            self.guard.closed["keep_alive_timeout"] += 1
            self._release()
        super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == "refused":
            self._cancel_timer()
            return
        self._release()
        super().connection_lost(exc)

    def close_idle(self, reason: str) -> None:
        """Close this idle connection, counting why."""
        self.guard.closed[reason] += 1
        self._release()
        self.transport.close()

    def _go_idle(self) -> None:
        self._state = "idle"
        self.guard.idle[self] = None

    def _go_active(self) -> None:
        self._state = "active"
        self._cycle_seen = self.cycle
        self.guard.idle.pop(self, None)
        self._cancel_timer()

    def _start_header_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self.guard.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        self._timer = None
        if self._state == "idle" and not self.transport.is_closing():
            self.close_idle("header_timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        """No longer counted (idempotent): closing, or closed."""
        self._cancel_timer()
        if self._state in ("idle", "active"):
            self.guard.idle.pop(self, None)
            self.guard.open -= 1
            self._state = "closed"
