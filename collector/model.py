"""Plain records shared by every stage after the wire format.

The wire format stops at the decoders (`collector.otlp`, `collector.zipkin`): everything
downstream sees only these records. Hot records use ``slots=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

AttrValue = str | bool | int | float | bytes | list[Any] | dict[str, Any] | None
Attributes = dict[str, AttrValue]


class SpanKind(IntEnum):
    """OTLP ``Span.SpanKind`` numbers."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


@dataclass(slots=True)
class SpanRecord:
    """One decoded span.

    ``trace_id`` is 16 bytes, ``span_id`` 8 bytes, ``parent_span_id`` 8 bytes or ``b""`` for a
    root span. ``resource`` is the resource's attribute dict, shared (not copied) by every span
    of that resource, so treat it as read-only. ``error`` is true when the span status is ERROR.
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    service: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    error: bool
    attributes: Attributes
    resource: Attributes
    status_message: str = ""
    # The W3C ``tracestate`` the span was recorded with (its ``ot=th:`` entry says how it was
    # sampled, see `collector.sampling`); "" when none.
    trace_state: str = ""
    # The (trace id, span id) of each span this one links to (a batch consumer's producers),
    # at most ``collector.limits.MAX_LINKS``.
    links: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass(slots=True)
class DecodeResult:
    """What a decoder made of one request body.

    ``rejected`` counts spans that were present but unusable (each reason kept, bounded, in
    ``errors``, and counted by kind in ``reasons``); the request as a whole still succeeds
    with OTLP partial success.
    """

    spans: list[SpanRecord] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # Rejected spans by reason (`collector.limits.SpanReason`); string values truncated and
    # attributes dropped by the caps of `collector.limits.SpanLimits`.
    reasons: dict[str, int] = field(default_factory=dict)
    truncated_values: int = 0
    dropped_attributes: int = 0


class DecodeError(ValueError):
    """The body as a whole is malformed: answer 400 with this message."""


class ConnectionType:
    """``connection_type`` label values, as Tempo and the servicegraph connector use them."""

    DIRECT = ""
    VIRTUAL_NODE = "virtual_node"
    DATABASE = "database"
    MESSAGING = "messaging_system"


@dataclass(slots=True)
class Call:
    """One observed call ``client -> server``, from a paired (or expired) span pair.

    Durations are ``-1`` for a half that was never seen (virtual nodes). ``client_error`` is the
    CLIENT/PRODUCER half's ERROR status, ``server_error`` the SERVER/CONSUMER half's: a client
    error with no server error is a timeout, refused connection or uninstrumented failure.
    """

    client: str
    server: str
    connection_type: str
    time_s: float
    client_duration_ns: int
    server_duration_ns: int
    client_error: bool
    server_error: bool
    trace_id: bytes
    server_is_virtual: bool = False
    client_is_virtual: bool = False
    # Calls this one stands for: more than 1 when its trace was head-sampled.
    weight: int = 1
    # queue -> consumer calls: consumer start - producer end (ns); -1 for every other call.
    lag_ns: int = -1

    @property
    def failed(self) -> bool:
        return self.client_error or self.server_error


Health = str  # one of `collector.vocabulary.HEALTH_STATES`


@dataclass(slots=True)
class Node:
    """A node of a snapshot: the contract's fields plus ``meta`` for appenders' own keys."""

    id: str
    kind: str  # "service" | "virtual"
    team: str | None = None
    health: Health = "unknown"
    rate_rps: float = 0.0
    error_ratio: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Edge:
    source: str
    target: str
    connection_type: str = ""
    rate_rps: float = 0.0
    error_ratio: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    health: Health = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """The graph at one moment over one window, built by the appender pipeline.

    ``historical``: ``generated_at`` is a past moment (``GET /api/graph?at=``,
    `collector.history`); appenders show what was known then, never live-only figures."""

    window_s: float
    generated_at: float
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    historical: bool = False
