"""The words every part of Conway shares, each defined here once.

Health states and their order, the span kinds on either side of a call, the node for traffic
entering the system, and the span attributes that name the peer of an outgoing call. The
collector's stages, its API and the dashboard (including its Prometheus source) import them
from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from collector.model import SpanKind

# --- health ---------------------------------------------------------------------------------
UNKNOWN, HEALTHY, DEGRADED, FAILING, DOWN = "unknown", "healthy", "degraded", "failing", "down"
# Least to most severe. "unknown" ranks below every known state, so one known service decides
# a group's health.
HEALTH_STATES: tuple[str, ...] = (UNKNOWN, HEALTHY, DEGRADED, FAILING, DOWN)
HEALTH_RANK: dict[str, int] = {state: rank for rank, state in enumerate(HEALTH_STATES)}
# States that count as "failing" in summaries (a team with one of these is in trouble).
BAD_HEALTH: frozenset[str] = frozenset((FAILING, DOWN))


def health_rank(state: object) -> int:
    """The state's rank in `HEALTH_STATES`; an unrecognised value ranks as ``unknown``."""
    return HEALTH_RANK.get(state, 0) if isinstance(state, str) else 0


def worst_health(states: Iterable[str]) -> str:
    """The most severe of ``states`` (``unknown`` when there are none)."""
    worst = UNKNOWN
    for state in states:
        if health_rank(state) > HEALTH_RANK[worst]:
            worst = state
    return worst


# --- span kinds -----------------------------------------------------------------------------
# Plain ints for the hot comparisons (an IntEnum compares more slowly).
SERVER, CLIENT, PRODUCER, CONSUMER = (int(k) for k in (SpanKind.SERVER, SpanKind.CLIENT,
                                                       SpanKind.PRODUCER, SpanKind.CONSUMER))
# The calling and the called side of a call (messaging: producer -> consumer).
CALLER_KINDS: frozenset[int] = frozenset((CLIENT, PRODUCER))
CALLEE_KINDS: frozenset[int] = frozenset((SERVER, CONSUMER))

# --- nodes ----------------------------------------------------------------------------------
# The virtual node for traffic entering the system (root server spans); no one owns it.
USER_NODE = "user"

# --- peer naming ----------------------------------------------------------------------------
# Attributes that name the peer of an outgoing call, in order: the peer service, then the
# database's own name ahead of the network address (`db.namespace=orders` names the node
# `orders` even when `server.address` is 127.0.0.1), then the messaging system.
PEER_NAME_ATTRIBUTES: tuple[str, ...] = (
    "peer.service",
    "service.peer.name",
    "peer.service.name",
    "db.namespace",
    "db.name",
    "db.system",
    "db.system.name",
    "messaging.system",
)
# Attributes that give only the peer's network address; read after the names.
PEER_ADDRESS_ATTRIBUTES: tuple[str, ...] = ("server.address", "net.peer.name")
PEER_ATTRIBUTES: tuple[str, ...] = (*PEER_NAME_ATTRIBUTES, *PEER_ADDRESS_ATTRIBUTES)
# Attributes a root SERVER/CONSUMER span may carry to name who called it (Tempo's behaviour).
CALLER_ATTRIBUTES: tuple[str, ...] = PEER_NAME_ATTRIBUTES[:3]
# Attributes that mark a call as a database call.
DATABASE_ATTRIBUTES: tuple[str, ...] = ("db.system", "db.system.name", "db.name", "db.namespace")
# A response's status on a CLIENT span: the callee (or a proxy before it) answered.
RESPONSE_STATUS_ATTRIBUTES: tuple[str, ...] = ("http.response.status_code", "http.status_code",
                                               "rpc.grpc.status_code")
# The port a client span called (old semantic conventions first named it net.peer.port).
PEER_PORT_ATTRIBUTES: tuple[str, ...] = ("server.port", "net.host.port", "net.peer.port")
# The port a server span serves on.
SERVER_PORT_ATTRIBUTES: tuple[str, ...] = ("server.port", "net.host.port", "url.port")

# --- messaging ------------------------------------------------------------------------------
# Where a PRODUCER publishes and a CONSUMER receives (`messaging.destination` is the older
# conventions' name).
MESSAGING_DESTINATION_ATTRIBUTES: tuple[str, ...] = ("messaging.destination.name",
                                                     "messaging.destination")


def queue_destination(node: str) -> str | None:
    """The destination a queue node is named for (``order-events`` for ``kafka:
    order-events``), the name a catalog Resource gives the topic; None for a name that is not
    ``"<system>: <destination>"``."""
    system, sep, dest = node.partition(": ")
    return dest if sep and system and dest else None


def queue_name(attrs: Mapping[str, object]) -> str | None:
    """The queue node a messaging span names: ``"<system>: <destination>"`` (``kafka:
    order-events``), the destination alone without a system; None without a destination."""
    for key in MESSAGING_DESTINATION_ATTRIBUTES:
        dest = attrs.get(key)
        if isinstance(dest, str) and dest:
            system = attrs.get("messaging.system")
            return f"{system}: {dest}" if isinstance(system, str) and system else dest
    return None
