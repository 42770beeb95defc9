"""Edge pairing: CLIENT and SERVER halves of one call meet on one key, as the OpenTelemetry
servicegraph connector and Tempo's service-graph processor pair them.

A CLIENT (or PRODUCER) span waits under ``(trace_id, span_id)``, a SERVER (or CONSUMER) span
under ``(trace_id, parent_span_id)``; when the other half arrives one ``Call`` is emitted. What
never pairs expires after ``ttl_s``:

- a CLIENT/PRODUCER span that names its peer becomes a call to a *virtual* node (an
  uninstrumented database, queue or external API); one naming no peer is counted as unpaired
  (or, with ``unknown_peer`` set, becomes a call to that node, as the otelcol connector does);
- a SERVER/CONSUMER span whose parent never arrived is counted as unpaired (both upstreams do
  the same: they only invent a caller for root spans);
- a batch CONSUMER span (a root with span links) waits under each linked producer's key that
  has not arrived; one that never comes is a delivery from the queue without a lag.

Root SERVER/CONSUMER spans (no parent) are called by the virtual node ``user`` right away (or by
the peer the span names, as Tempo does). Database CLIENT spans complete right away too: a
database sends no span of its own. The pending store is bounded by ``max_items``; spans refused
when it is full are counted in ``dropped``, never silently lost. A span seen lately (same trace
id and span id: an exporter's retry, a replayed batch) is dropped and counted in ``duplicates``
before it pairs, so a replay adds no calls; ``max_seen`` bounds the keys remembered
(`collector.limits.RecentSpans`). Both caps come from the memory budget
(`collector.limits.MemoryLimits`). Time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

from collector.limits import DEFAULT_MEMORY, RecentSpans
from collector.model import Attributes, Call, ConnectionType, SpanRecord
from collector.ports import PortMap
from collector.sampling import Sampling
from collector.vocabulary import (
    CALLER_ATTRIBUTES,
    DATABASE_ATTRIBUTES,
    MESSAGING_DESTINATION_ATTRIBUTES,
    PEER_ADDRESS_ATTRIBUTES,
    PEER_ATTRIBUTES,
    PEER_PORT_ATTRIBUTES,
    USER_NODE,
    queue_name,
)
from collector.vocabulary import CLIENT as _CLIENT
from collector.vocabulary import CONSUMER as _CONSUMER
from collector.vocabulary import PRODUCER as _PRODUCER
from collector.vocabulary import SERVER as _SERVER

# A producer is remembered this long after its message reached the queue, for consumers that
# come later (another consumer group, a batch linking to it): longer than a queue's usual lag.
PRODUCER_MEMORY_S = 30.0
_ADDRESS_ATTRIBUTES = (*PEER_ADDRESS_ATTRIBUTES, "network.peer.address")
# Tempo's order of the attributes that name a call's peer (Conway's is `PEER_ATTRIBUTES`).
TEMPO_PEER_ATTRIBUTES: tuple[str, ...] = (
    "peer.service",
    "server.address",
    "network.peer.address",
    "db.namespace",
    "db.name",
    "db.system",
    "db.system.name",
)
OTELCOL_PEER_ATTRIBUTES: tuple[str, ...] = (
    "peer.service",
    "service.peer.name",
    "peer.service.name",
    "db.name",
    "db.system",
)
# A waiting half with at most this many attributes (and a name this short) is kept as it is.
_KEEP_AS_IS = 8
_KEEP_AS_IS_NAME = 256
# Attributes read from a waiting half besides the peer and database ones.
_EXTRA_KEPT: tuple[str, ...] = ("messaging.system", "network.peer.port",
                                *MESSAGING_DESTINATION_ATTRIBUTES)


class PendingFull(Exception):
    """The pending store holds ``max_items`` halves: the span was dropped (and counted)."""

    def __init__(self, dropped: int, max_items: int) -> None:
        super().__init__(
            f"edge pairing store full ({max_items} pending halves): dropped {dropped} spans; "
            "raise max_items or lower the pairing TTL"
        )
        self.dropped = dropped


@dataclass
class PairingConfig:
    """How halves pair and expire. The defaults are Conway's; ``tempo()``/``otelcol()`` mirror
    the upstream processors (for the reference-trace tests)."""

    ttl_s: float = 2.0
    max_items: int = DEFAULT_MEMORY.pairing_max_items
    max_seen: int = DEFAULT_MEMORY.max_seen_spans  # span keys remembered to catch re-sent spans
    peer_attributes: tuple[str, ...] = PEER_ATTRIBUTES
    # The node an expired client span naming no peer calls; None counts it as unpaired instead.
    unknown_peer: str | None = None
    # A root SERVER/CONSUMER span naming its caller (peer.service) is called by that node.
    root_caller_from_peer: bool = True
    # An expired client half naming only a literal address (127.0.0.1) and a port calls the
    # service known to serve that port (`collector.ports`), not a node named after the address.
    peer_by_port: bool = True
    # A producer and its consumer meet through a node for the queue they name
    # (``kafka: order-events``): producer -> queue -> consumer, the queue's latency being the
    # lag (consumer start - producer end). Off: one producer -> consumer edge, as Tempo draws.
    queue_nodes: bool = True

    @classmethod
    def tempo(cls, **kw: object) -> PairingConfig:
        cfg = cls(peer_attributes=TEMPO_PEER_ATTRIBUTES, peer_by_port=False, queue_nodes=False)
        for k, v in kw.items():
            setattr(cfg, k, v)
        return cfg

    @classmethod
    def otelcol(cls, **kw: object) -> PairingConfig:
        cfg = cls(
            peer_attributes=OTELCOL_PEER_ATTRIBUTES, unknown_peer="unknown",
            root_caller_from_peer=False, peer_by_port=False, queue_nodes=False,
        )
        for k, v in kw.items():
            setattr(cfg, k, v)
        return cfg


@dataclass
class PairingCounters:
    paired: int = 0  # calls from two halves that met
    roots: int = 0  # root SERVER/CONSUMER spans attributed to `user` or a named caller
    database: int = 0  # database CLIENT spans completed at once
    expired: int = 0  # halves that waited ttl_s without meeting their other half
    virtual: int = 0  # expired CLIENT/PRODUCER halves turned into calls to a virtual node
    unpaired: int = 0  # expired halves that produced no call
    dropped: int = 0  # halves refused because the store was full
    replaced: int = 0  # a second half with the same key and kind replaced the first
    duplicates: int = 0  # spans seen lately (same trace and span id), dropped before pairing

    def export(self) -> dict[str, int]:
        return asdict(self)

    def restore(self, counters: Mapping[str, int]) -> None:
        """Set the counters from `export`'s output (missing ones to 0, unknown names ignored)."""
        for f in fields(self):
            setattr(self, f.name, int(counters.get(f.name, 0)))


def _first(attrs: Attributes, keys: Sequence[str]) -> str | None:
    for k in keys:
        v = attrs.get(k)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if v is not None and v != "":
            if k == "network.peer.address":
                port = attrs.get("network.peer.port")
                return f"{v}:{port!s}" if port not in (None, "", b"") else str(v)
            return str(v)
    return None


def _names_address(attrs: Attributes, peer: str) -> bool:
    """``peer`` came from an address attribute, not a name."""
    return any(attrs.get(k) == peer for k in _ADDRESS_ATTRIBUTES)


def _is_database(attrs: Attributes) -> bool:
    # DATABASE_ATTRIBUTES, unrolled: this runs for every unpaired CLIENT span.
    return bool(
        attrs.get("db.system") or attrs.get("db.system.name") or attrs.get("db.name")
        or attrs.get("db.namespace")
    )


def _connection_type(attrs: Attributes) -> str:
    if _is_database(attrs):
        return ConnectionType.DATABASE
    if attrs.get("messaging.system") not in (None, ""):
        return ConnectionType.MESSAGING
    return ConnectionType.VIRTUAL_NODE


@dataclass
class Pairer:
    """Pairs halves into calls. ``feed`` and ``expire`` return the calls they complete."""

    config: PairingConfig = field(default_factory=PairingConfig)
    counters: PairingCounters = field(default_factory=PairingCounters)
    # key -> (deadline, span, is_client); dict order is arrival order, so expiry scans the front.
    _pending: dict[tuple[bytes, bytes], tuple[float, SpanRecord, bool]] = field(
        default_factory=dict
    )
    # The error of the last ``feed`` that lost spans to a full store, else None.
    last_error: PendingFull | None = None
    # (peer attributes it was built for, attribute keys a waiting half keeps), built lazily.
    _keep: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    _recent: RecentSpans | None = None  # built on first use, from config.max_seen
    # Which service serves which port, learned from server spans (shared with the diagnosis).
    ports: PortMap = field(default_factory=PortMap)
    # How many calls a kept span stands for under head sampling.
    sampling: Sampling = field(default_factory=Sampling)
    # Producers whose message reached its queue, for later consumers: key -> (forget at, span).
    _producers: dict[tuple[bytes, bytes], tuple[float, SpanRecord]] = field(
        default_factory=dict)

    def __len__(self) -> int:
        return len(self._pending)

    def drop_duplicates(self, spans: Sequence[SpanRecord]) -> Sequence[SpanRecord]:
        """``spans`` without those seen lately (counted in ``duplicates``): the same sequence
        when there is none. Only spans pairing reads (not INTERNAL ones) are remembered."""
        recent = self._recent
        if recent is None:
            recent = self._recent = RecentSpans(max(2, self.config.max_seen))
        fresh, dropped = recent.drop_seen(spans, _SERVER)
        self.counters.duplicates += dropped
        return fresh

    def feed(self, spans: Sequence[SpanRecord], now: float,
             deduplicated: bool = False) -> list[Call]:
        """Pair ``spans``; returns completed calls. Raises nothing: drops are counted, and
        ``last_error`` says how many spans this batch lost to a full store. Re-sent spans are
        dropped first, unless ``deduplicated`` says ``drop_duplicates`` already did."""
        if not deduplicated:
            spans = self.drop_duplicates(spans)
        calls: list[Call] = []
        append = calls.append
        pending = self._pending
        deadline = now + self.config.ttl_s
        max_items = self.config.max_items
        c = self.counters
        learn_port = self.ports.learn
        learned: object = None
        dropped = 0
        for span in spans:
            kind = span.kind
            if kind == _CLIENT or kind == _PRODUCER:
                key = (span.trace_id, span.span_id)
                other = pending.get(key)
                if other is not None and not other[2]:
                    del pending[key]
                    c.paired += 1
                    calls.extend(self._pair(span, other[1], now))
                    continue
                if kind == _CLIENT and span.attributes and _is_database(span.attributes):
                    c.database += 1
                    append(self._to_peer(span, now, ConnectionType.DATABASE))
                    continue
                if other is not None:
                    # Same key, same half (a retry or a duplicate): the newer one waits, at the
                    # back, so the store stays in deadline order.
                    c.replaced += 1
                    del pending[key]
                elif len(pending) >= max_items:
                    dropped += 1
                    continue
                pending[key] = (deadline, self._slim(span), True)
            elif kind == _SERVER or kind == _CONSUMER:
                if span.resource is not learned:
                    # The port a process serves on is its own: one server span of each
                    # resource in a batch says it (spans of a resource share its dict).
                    learned = span.resource
                    learn_port(span)
                parent = span.parent_span_id
                if not parent:
                    c.roots += 1
                    if span.links and kind == _CONSUMER and self.config.queue_nodes:
                        linked, waiting = self._linked(span, now)
                        calls.extend(linked)
                        # A message whose producer has not arrived yet (each process exports
                        # on its own schedule): the batch waits for it under the producer's
                        # key, as a child waits for its parent.
                        for key in waiting:
                            if len(pending) >= max_items:
                                dropped += 1
                                break
                            pending[key] = (deadline, self._slim(span), False)
                        if linked or waiting:
                            continue
                    append(self._root(span, now))
                    continue
                key = (span.trace_id, parent)
                other = pending.get(key)
                if other is not None and other[2]:
                    del pending[key]
                    c.paired += 1
                    calls.extend(self._pair(other[1], span, now))
                    continue
                if kind == _CONSUMER and other is None and key in self._producers:
                    # Another consumer (group) of a message already delivered: one more
                    # delivery from the queue; the publish was counted once.
                    c.paired += 1
                    calls.extend(self._deliveries(self._producers[key][1], span, now))
                    continue
                if other is not None:
                    # Same key, same half (a retry or a duplicate): the newer one waits, at the
                    # back, so the store stays in deadline order.
                    c.replaced += 1
                    del pending[key]
                elif len(pending) >= max_items:
                    dropped += 1
                    continue
                pending[key] = (deadline, self._slim(span), False)
        c.dropped += dropped
        self.last_error = PendingFull(dropped, max_items) if dropped else None
        return calls

    def _slim(self, span: SpanRecord) -> SpanRecord:
        """A waiting half, trimmed to what pairing reads when it carries more than a typical
        span: the store holds up to ``max_items`` of them, so its memory is bounded by a few
        attributes per half (each at most the decoders' value cap), not by what spans carry.
        """
        attrs = span.attributes
        if len(attrs) <= _KEEP_AS_IS and len(span.name) <= _KEEP_AS_IS_NAME:
            return span  # the common case, and no bigger than a trimmed one
        keep = self._keep
        if keep is None or keep[0] != self.config.peer_attributes:
            multiplier = (self.sampling.multiplier_key,) if self.sampling.multiplier_key else ()
            keep = self._keep = (self.config.peer_attributes, tuple(dict.fromkeys(
                (*self.config.peer_attributes, *DATABASE_ATTRIBUTES, *PEER_PORT_ATTRIBUTES,
                 *_EXTRA_KEPT, *multiplier))))
        slim = {k: attrs[k] for k in keep[1] if k in attrs}
        return SpanRecord(span.trace_id, span.span_id, span.parent_span_id, span.service, "",
                          span.kind, span.start_ns, span.end_ns, span.error, slim, span.resource,
                          "", span.trace_state)

    def expire(self, now: float) -> list[Call]:
        """Expire halves whose deadline is at or before ``now``; returns the virtual calls."""
        producers = self._producers
        while producers:
            first = next(iter(producers))
            if producers[first][0] > now:
                break
            del producers[first]
        pending = self._pending
        if not pending:
            return []
        due = []
        for key, entry in pending.items():
            if entry[0] > now:
                break
            due.append(key)
        calls: list[Call] = []
        c = self.counters
        for key in due:
            _, span, is_client = pending.pop(key)
            c.expired += 1
            if is_client and span.kind == _PRODUCER and self.config.queue_nodes:
                self._remember_producer(span, now)  # consumers may still link to it
            if is_client:
                call = self._expired(span, now)
            elif span.kind == _CONSUMER and not span.parent_span_id:
                # A batch that waited for a linked producer in vain: its message was still
                # delivered from the queue (lag unknown).
                call = self._root(span, now)
            else:
                call = None
            if call is None:
                c.unpaired += 1
            else:
                c.virtual += 1
                calls.append(call)
        return calls

    def flush(self, now: float) -> list[Call]:
        """Expire everything pending, whatever its deadline (used at shutdown and in tests)."""
        for key, (_, span, is_client) in list(self._pending.items()):
            self._pending[key] = (now, span, is_client)
        return self.expire(now)

    # -- call construction -------------------------------------------------------------------

    def _weight(self, span: SpanRecord) -> int:
        """Calls a kept span stands for under head sampling (`collector.sampling`)."""
        if not span.trace_state and self.sampling.multiplier_key is None:
            return 1
        return self.sampling.weight(span)

    def _pair(self, client: SpanRecord, server: SpanRecord, now: float) -> list[Call]:
        messaging = client.kind == _PRODUCER or server.kind == _CONSUMER
        if messaging and self.config.queue_nodes:
            queue = queue_name(client.attributes) or queue_name(server.attributes)
            if queue is not None:
                if client.kind == _PRODUCER:
                    self._remember_producer(client, now)
                return self._via_queue(client, server, queue, now)
        return [Call(
            client.service,
            server.service,
            ConnectionType.MESSAGING if messaging else ConnectionType.DIRECT,
            now,
            client.end_ns - client.start_ns,
            server.end_ns - server.start_ns,
            client.error,
            server.error,
            client.trace_id,
            weight=max(self._weight(server), self._weight(client)),
        )]

    def _linked(self, consumer: SpanRecord,
                now: float) -> tuple[list[Call], list[tuple[bytes, bytes]]]:
        """A consumer starting its own trace (a batch) paired through its links with the
        producers they name: a producer still waiting gives producer -> queue -> consumer,
        one whose message was delivered already (or that went to its queue unanswered) one
        more queue -> consumer delivery; each with its message's lag. Also returns the links
        whose producer is neither (not arrived yet, or forgotten after ``PRODUCER_MEMORY_S``):
        the consumer waits for each, and one that never comes is a delivery without a lag
        when it expires (see ``expire``)."""
        pending = self._pending
        out: list[Call] = []
        waiting: list[tuple[bytes, bytes]] = []
        for key in consumer.links:
            other = pending.get(key)
            if other is not None and other[2] and other[1].kind == _PRODUCER:
                del pending[key]
                self.counters.paired += 1
                out.extend(self._pair(other[1], consumer, now))
            elif key in self._producers:
                self.counters.paired += 1
                out.extend(self._deliveries(self._producers[key][1], consumer, now))
            elif other is None:
                waiting.append(key)
        return out, waiting

    def _remember_producer(self, producer: SpanRecord, now: float) -> None:
        """Keep a producer whose message reached its queue, for consumers that come later
        (other consumer groups, batches linking to it); bounded, oldest forgotten first."""
        producers = self._producers
        key = (producer.trace_id, producer.span_id)
        if key not in producers and len(producers) >= max(1, self.config.max_items // 4):
            del producers[next(iter(producers))]
        producers[key] = (now + PRODUCER_MEMORY_S, self._slim(producer))

    def _deliveries(self, producer: SpanRecord, consumer: SpanRecord, now: float) -> list[Call]:
        queue = queue_name(producer.attributes) or queue_name(consumer.attributes)
        if queue is None:
            return [Call(producer.service, consumer.service, ConnectionType.MESSAGING, now,
                         -1, consumer.end_ns - consumer.start_ns, False, consumer.error,
                         consumer.trace_id, client_is_virtual=False,
                         weight=self._weight(consumer))]
        return self._via_queue(producer, consumer, queue, now)[1:]

    def _via_queue(self, producer: SpanRecord, consumer: SpanRecord, queue: str,
                   now: float) -> list[Call]:
        """producer -> queue (the publish; failed when the producer span did) and queue ->
        consumer (the processing; failed when the consumer span did), with the lag."""
        weight = max(self._weight(consumer), self._weight(producer))
        lag = max(0, consumer.start_ns - producer.end_ns)
        return [
            Call(producer.service, queue, ConnectionType.MESSAGING, now,
                 producer.end_ns - producer.start_ns, -1, producer.error, False,
                 producer.trace_id, server_is_virtual=True, weight=weight),
            Call(queue, consumer.service, ConnectionType.MESSAGING, now, -1,
                 consumer.end_ns - consumer.start_ns, False, consumer.error, consumer.trace_id,
                 client_is_virtual=True, weight=weight, lag_ns=lag),
        ]

    def _root(self, span: SpanRecord, now: float) -> Call:
        caller = None
        if span.kind == _CONSUMER and self.config.queue_nodes:
            # A consumer whose producer's trace is another one (a batch, linked): its queue.
            caller = queue_name(span.attributes)
        if caller is None and self.config.root_caller_from_peer:
            caller = _first(span.attributes, CALLER_ATTRIBUTES)
        return Call(
            caller or USER_NODE,
            span.service,
            ConnectionType.VIRTUAL_NODE,
            now,
            -1,
            span.end_ns - span.start_ns,
            False,
            span.error,
            span.trace_id,
            client_is_virtual=True,
            weight=self._weight(span),
        )

    def _to_peer(self, span: SpanRecord, now: float, connection_type: str) -> Call:
        peer = _first(span.attributes, self.config.peer_attributes) or self.config.unknown_peer
        if peer is None:
            # A database span with no name at all: name the node by the system, or "database".
            peer = "database"
        return self._virtual_call(span, peer, now, connection_type)

    def _expired(self, span: SpanRecord, now: float) -> Call | None:
        attrs = span.attributes
        peer = None
        if span.kind == _PRODUCER and self.config.queue_nodes:
            peer = queue_name(attrs)  # published, consumed elsewhere (or not yet): the queue
        if peer is None:
            peer = _first(attrs, self.config.peer_attributes)
        if peer is not None and self.config.peer_by_port and _names_address(attrs, peer):
            peer = self.ports.resolve(attrs, peer) or peer
        peer = peer or self.config.unknown_peer
        if peer is None:
            return None
        return self._virtual_call(span, peer, now, _connection_type(span.attributes))

    def _virtual_call(self, span: SpanRecord, peer: str, now: float,
                      connection_type: str) -> Call:
        duration = span.end_ns - span.start_ns
        return Call(
            span.service,
            peer,
            connection_type,
            now,
            duration,
            # A virtual server half is the client's view of it (as Tempo records it).
            duration if connection_type == ConnectionType.DATABASE else -1,
            span.error,
            False,
            span.trace_id,
            server_is_virtual=True,
            weight=self._weight(span),
        )
