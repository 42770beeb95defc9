"""Receivers: the wire formats the collector ingests, as a registry keyed by path and media type.

A `Receiver` describes one wire format: the path it is POSTed to, the media types it decodes,
its decoder, and how it answers (its success body and its error body). `RECEIVERS` holds the
collector's own: OTLP/HTTP protobuf and JSON on ``/v1/traces`` (`OTLP`), Zipkin v2 JSON on
``/api/v2/spans`` (`ZIPKIN`). `collector.app.create_app` serves one POST route per registered
path, which picks the receiver by the request's media type. To add a wire format, write its
decoder (``(body, media, SpanLimits) -> DecodeResult``, raising `DecodeError` on a malformed
body) and ``RECEIVERS.register(Receiver(...))``: the rest of the path below is shared.

Every receiver request passes, in this order: the ingest token (401 with ``WWW-Authenticate``,
see `collector.edge.unauthorized`), the media type (415 when none of the path's receivers
decodes it), admission (503 with ``Retry-After``), the body (413 or 408 with
``Connection: close``, 400 when the client disconnects, 503 past the byte budget),
decompression (415 for an unknown Content-Encoding, 413 when it inflates past the limit),
decoding (400 when malformed), ingest, then the receiver's answer. Each refusal is counted by
reason (`collector.limits.RequestReason`) and answered with the receiver's ``fail``. Decoding
and ingest run in a worker thread so the event loop keeps answering while they hold the
service lock; at most ``DECODE_CONCURRENCY`` bodies are decoded at once (decoding is CPU-bound:
more would only multiply decoded copies in memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector import otlp, wire, zipkin
from collector.edge import (
    RETRY_AFTER_S,
    WWW_AUTHENTICATE,
    Admission,
    BodyTimeout,
    BodyTooLarge,
    Overloaded,
    read_body,
    unauthorized,
)
from collector.errors import error
from collector.exposition import IngestCounters
from collector.graph import TrafficGraph
from collector.limits import RequestReason, SpanLimits, screen_times
from collector.model import DecodeError, DecodeResult
from collector.service import CollectorService

# (body, the request's bare media type, span caps) -> spans; runs in a worker thread.
Decoder = Callable[[bytes, str, SpanLimits], DecodeResult]
# (decoded result, a warning about limits reached or "", the request's media type) -> answer.
Responder = Callable[[DecodeResult, str, str], Response]
# (status, message, the request's media type, maybe none the receiver decodes) -> answer.
Failer = Callable[[int, str, str], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


class Refusal(Exception):
    """Raised by a receiver's ``respond`` to refuse a request after decoding: answered with its
    ``fail(status, message)`` and counted as ``reason`` in ``conway_requests_rejected_total``."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def json_error(status: int, message: str, media: str) -> Response:
    """The default ``fail``: JSON ``{"error": message}`` whatever the request's media type."""
    return error(status, message)


def accepted_json(result: DecodeResult, warning: str, media: str) -> Response:
    """The default ``respond``, for formats with no partial success of their own: 202 JSON
    ``{"accepted", "rejected"}`` with ``errors`` and ``warning`` when there are any; when every
    span was rejected, 400 (`Refusal`, counted as ``all_spans_rejected``)."""
    if result.rejected and not result.spans:
        # Nothing usable: say so with 400 (no partial success to report it in).
        raise Refusal(400, f"all {result.rejected} spans were rejected: "
                           + "; ".join(result.errors), RequestReason.ALL_SPANS_REJECTED)
    body: dict[str, Any] = {"accepted": len(result.spans), "rejected": result.rejected}
    if result.errors:
        body["errors"] = result.errors
    if warning:
        body["warning"] = warning
    return JSONResponse(body, status_code=202)


@dataclass(frozen=True)
class Receiver:
    """One wire format the collector ingests.

    ``path``: where it is POSTed. ``media_types``: the bare, lower-case media types
    (Content-Type without parameters) it decodes; with ``accept_missing_media`` also a request
    without a Content-Type (its media type is then ``""``). ``name`` and ``media_hint`` word
    the 415 answer: "Content-Type 'x' is not supported for {name}; send {media_hint}" (the hint
    defaults to the media types joined by "or"). ``decode`` turns a (decompressed) body into
    spans in a worker thread. ``respond`` answers a decoded and ingested request (or raises
    `Refusal`); ``fail`` answers every refusal (401, 408, 413, 415, 400, 503). All three get
    the request's media type.
    """

    path: str
    media_types: tuple[str, ...]
    name: str
    decode: Decoder
    respond: Responder = accepted_json
    fail: Failer = json_error
    media_hint: str = ""
    accept_missing_media: bool = False

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"receiver path must start with '/', got {self.path!r}")
        if not self.media_types:
            raise ValueError(f"receiver {self.name!r} on {self.path} names no media type")
        for media in self.media_types:
            if media != wire.media_type(media) or not media:
                raise ValueError(f"receiver {self.name!r}: media type {media!r} is not a bare "
                                 f"lower-case media type such as 'application/json'")

    @property
    def hint(self) -> str:
        return self.media_hint or " or ".join(self.media_types)

    def media_keys(self) -> tuple[str, ...]:
        """The request media types it is chosen for (``""``: no Content-Type)."""
        return self.media_types + (("",) if self.accept_missing_media else ())


class ReceiverRegistry:
    """Receivers by path and media type; paths (and receivers on one path) in registration
    order. A path may hold several receivers, each for its own media types."""

    def __init__(self, receivers: Iterable[Receiver] = ()) -> None:
        self._paths: dict[str, dict[str, Receiver]] = {}
        for receiver in receivers:
            self.register(receiver)

    def register(self, receiver: Receiver) -> Receiver:
        """Add ``receiver``; ValueError when one of its media types on its path is taken."""
        served = self._paths.get(receiver.path, {})
        for media in receiver.media_keys():
            if media in served:
                raise ValueError(
                    f"{receiver.path} already has a receiver for "
                    f"{media or 'requests without Content-Type'}: {served[media].name}")
        self._paths.setdefault(receiver.path, {}).update(
            dict.fromkeys(receiver.media_keys(), receiver))
        return receiver

    def unregister(self, receiver: Receiver) -> None:
        served = self._paths.get(receiver.path, {})
        for media in [m for m, r in served.items() if r is receiver]:
            del served[media]
        if not served:
            self._paths.pop(receiver.path, None)

    def lookup(self, path: str, media: str) -> Receiver | None:
        """The receiver for a request to ``path`` with bare media type ``media``, or None."""
        return self._paths.get(path, {}).get(media)

    def paths(self) -> tuple[str, ...]:
        return tuple(self._paths)

    def by_media(self, path: str) -> dict[str, Receiver]:
        """``path``'s receivers by the media type they are chosen for (a copy)."""
        return dict(self._paths.get(path, {}))

    def at(self, path: str) -> tuple[Receiver, ...]:
        """``path``'s receivers, each once, in registration order."""
        return _distinct(self._paths.get(path, {}).values())

    def copy(self) -> ReceiverRegistry:
        return ReceiverRegistry(self)

    def __iter__(self) -> Iterator[Receiver]:
        for path in self._paths:
            yield from self.at(path)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _distinct(receivers: Iterable[Receiver]) -> tuple[Receiver, ...]:
    out: list[Receiver] = []
    for r in receivers:
        if not any(r is seen for seen in out):
            out.append(r)
    return tuple(out)


# -- the collector's receivers ---------------------------------------------------------------

def _otlp_fail(status: int, message: str, media: str) -> Response:
    # Errors answer in the request's encoding; an unknown one gets JSON, readable by anyone.
    answer_media = otlp.PROTOBUF if media == otlp.PROTOBUF else otlp.JSON
    return Response(otlp.encode_status(message, answer_media), status_code=status,
                    media_type=answer_media)


def _otlp_respond(result: DecodeResult, warning: str, media: str) -> Response:
    # Rejected spans and warnings go in the OTLP partial success, in the request's encoding.
    message = "; ".join(x for x in ("; ".join(result.errors), warning) if x)
    return Response(otlp.encode_response(result.rejected, message, media), media_type=media)


def _zipkin_decode(body: bytes, media: str, limits: SpanLimits) -> DecodeResult:
    return zipkin.decode_spans(body, limits)


OTLP = Receiver(
    path="/v1/traces", media_types=(otlp.PROTOBUF, otlp.JSON), name="OTLP traces",
    decode=otlp.decode_traces, respond=_otlp_respond, fail=_otlp_fail,
)
ZIPKIN = Receiver(
    path="/api/v2/spans", media_types=("application/json",), name="Zipkin spans",
    decode=_zipkin_decode, respond=accepted_json, fail=json_error,
    media_hint="Zipkin v2 JSON as application/json", accept_missing_media=True,
)
# What `collector.app.create_app` serves unless given another registry.
RECEIVERS = ReceiverRegistry([OTLP, ZIPKIN])


# -- the shared receive path -----------------------------------------------------------------

class ReceiverApi:
    """The receive path every `Receiver` shares, bound to one service: the ingest token,
    admission, body limits, decompression, decoding and ingest, and the counters."""

    def __init__(self, service: CollectorService, counters: IngestCounters) -> None:
        self.service = service
        self.counters = counters
        self.graph: TrafficGraph = service.parts["graph"]
        edge = service.config.edge
        self.admission = Admission(edge.max_inflight_requests, edge.max_inflight_bytes)
        self.body_timeout_s = edge.body_timeout_s
        self.limits: SpanLimits = edge.span_limits
        token = edge.ingest_token
        self.ingest_token: bytes | None = token.encode() if token else None
        self.decoding = asyncio.Semaphore(edge.decode_concurrency)

    def routes(self, receivers: ReceiverRegistry) -> list[Route]:
        """One POST route per path of ``receivers`` (as registered now), in their order."""
        return [Route(path, self.endpoint(receivers.by_media(path)), methods=["POST"])
                for path in receivers.paths()]

    def endpoint(self, by_media: Mapping[str, Receiver]) -> Endpoint:
        """The handler of one path: its receivers by the media type each is chosen for."""
        served = _distinct(by_media.values())
        first = served[0]
        hint = " or ".join(r.hint for r in served)

        async def receive(request: Request) -> Response:
            media = wire.media_type(request.headers.get("content-type"))
            receiver = by_media.get(media)
            # A media type no receiver here decodes is answered as the first receiver would.
            answering = receiver if receiver is not None else first
            denied = unauthorized(request, self.ingest_token)
            if denied is not None:
                self._refused(RequestReason.UNAUTHORIZED)
                response = answering.fail(401, denied, media)
                response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
                return response
            if receiver is None:
                self._refused(RequestReason.MEDIA_TYPE)
                return first.fail(415, f"Content-Type {media or '(none)'!r} is not supported "
                                       f"for {first.name}; send {hint}", media)
            got = await self._receive(request, receiver, media)
            if isinstance(got, Response):
                return got
            result, warning = got
            try:
                return receiver.respond(result, warning, media)
            except Refusal as exc:
                self._refused(exc.reason)
                return receiver.fail(exc.status, str(exc), media)

        return receive

    async def _decode_and_ingest(
        self, body: bytes, encoding: str | None, decode: Callable[[bytes], DecodeResult]
    ) -> tuple[DecodeResult, str]:
        limit = self.service.config.max_body_bytes
        window = self.limits.time_window_s

        def work() -> tuple[DecodeResult, str]:
            raw = wire.decompress(body, encoding, limit)
            result = decode(raw)
            now = self.service.clock()
            screen_times(result, now, window, otlp.MAX_ERRORS)
            g = self.graph
            with self.service.lock:
                nodes, edges = g.dropped_nodes, g.dropped_edges
                self.service.ingest(result.spans, now)
                warning = _limit_warning(g, g.dropped_nodes - nodes, g.dropped_edges - edges)
                pairing_error = g.pairer.last_error
                if pairing_error is not None:
                    warning = "; ".join(x for x in (warning, str(pairing_error)) if x)
                c = self.counters
                c.spans_received += len(result.spans)
                c.spans_rejected += result.rejected
                c.truncated_values += result.truncated_values
                c.dropped_attributes += result.dropped_attributes
                if result.reasons:
                    c.reject_spans(result.reasons)
            return result, warning

        async with self.decoding:
            return await run_in_threadpool(work)

    def _refused(self, reason: str) -> None:
        with self.service.lock:
            self.counters.reject_request(reason)

    async def _receive(
        self, request: Request, receiver: Receiver, media: str,
    ) -> tuple[DecodeResult, str] | Response:
        """Admission, body, decoding and ingest, shared by every receiver: the decoded result
        and a warning about limits reached (or ""), or the error response (counted by reason)."""
        limits = self.limits

        def decode(raw: bytes) -> DecodeResult:
            return receiver.decode(raw, media, limits)

        def fail(status: int, message: str) -> Response:
            return receiver.fail(status, message, media)

        busy = self.admission.busy()
        if busy is not None:
            self._refused(RequestReason.OVERLOADED)
            response = fail(503, busy)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        limit = self.service.config.max_body_bytes
        held = [0]
        self.admission.enter()
        try:
            body = await read_body(request, limit, self.body_timeout_s, self.admission, held)
            return await self._decode_and_ingest(
                body, request.headers.get("content-encoding"), decode)
        except (BodyTooLarge, wire.PayloadTooLarge) as exc:
            self._refused(RequestReason.TOO_LARGE)
            msg = str(exc) if isinstance(exc, wire.PayloadTooLarge) else str(
                wire.PayloadTooLarge(str(exc), limit))
            response = fail(413, msg)
            response.headers["Connection"] = "close"  # do not read the rest of a huge body
            return response
        except ClientDisconnect:
            # Nobody is left to answer; the slot and the bytes it held are freed below.
            self._refused(RequestReason.DISCONNECTED)
            return fail(400, "client disconnected before sending the whole body")
        except BodyTimeout as exc:
            self._refused(RequestReason.BODY_TIMEOUT)
            response = fail(408, str(exc))
            response.headers["Connection"] = "close"
            return response
        except Overloaded as exc:
            self._refused(RequestReason.OVERLOADED)
            response = fail(503, str(exc))
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except wire.UnsupportedEncoding as exc:
            self._refused(RequestReason.ENCODING)
            return fail(415, str(exc))
        except wire.UnsupportedMediaType as exc:
            self._refused(RequestReason.MEDIA_TYPE)
            return fail(415, str(exc))
        except DecodeError as exc:
            self._refused(RequestReason.MALFORMED)
            return fail(400, str(exc))
        finally:
            self.admission.leave(held[0])


def _limit_warning(graph: TrafficGraph, nodes: int, edges: int) -> str:
    """What the graph's caps refused from one request, as a sentence (or "")."""
    parts = []
    if nodes:
        parts.append(f"{nodes} spans or calls named a new node past the node limit "
                     f"(max_nodes={graph.max_nodes})")
    if edges:
        parts.append(f"{edges} calls were on a new edge past the edge limit "
                     f"(max_edges={graph.max_edges}) or to a refused node")
    if not parts:
        return ""
    return ("; ".join(parts) + "; they are counted, not graphed (see \"limits\" in /api/graph "
            "and conway_graph_dropped_* on /metrics)")
