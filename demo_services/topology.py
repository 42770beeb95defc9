"""The demo shop's topology: services, their routes, and the calls each route makes.

Loaded from ``catalog/topology.yaml`` (format documented at the top of that file). Loading
checks everything a service needs before it starts — unknown call targets, duplicate ports,
malformed routes — and names the offending entry, so a typo fails at ``up`` and not mid-demo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from collector.topology import TopologyError, check_port, read_document

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "catalog" / "topology.yaml"
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_RESERVED_PREFIXES = ("/admin", "/metrics", "/healthz")


@dataclass(frozen=True, slots=True)
class CallSpec:
    target: str
    kind: str  # "service" or "db"
    required: bool
    timeout_ms: float
    method: str = ""
    path: str = ""
    operation: str = ""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    calls: tuple[CallSpec, ...] = ()
    # Topics a message is published to once the calls succeeded (see `TopicSpec`).
    publishes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A service reading a topic in batches: every ``poll_ms`` it takes up to ``max_batch``
    messages and processes them in one CONSUMER span (its consumer group: the service)."""

    topic: str
    max_batch: int
    poll_ms: float


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A message topic (``system``: the ``messaging.system`` spans name, e.g. kafka)."""

    name: str
    system: str


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    port: int
    version: str
    work_ms: float
    routes: tuple[RouteSpec, ...]
    consumes: tuple[ConsumerSpec, ...] = ()

    def publishes(self) -> list[str]:
        """Distinct topics its routes publish to, in first-publish order."""
        return list(dict.fromkeys(t for route in self.routes for t in route.publishes))

    def dependencies(self) -> list[str]:
        """Distinct call targets of all routes, in first-call order."""
        seen: dict[str, None] = {}
        for route in self.routes:
            for call in route.calls:
                seen.setdefault(call.target)
        return list(seen)


@dataclass(frozen=True, slots=True)
class VirtualSpec:
    name: str
    db_system: str
    db_namespace: str | None
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Topology:
    services: dict[str, ServiceSpec]
    virtual: dict[str, VirtualSpec] = field(default_factory=dict)
    source: Path | None = None
    topics: dict[str, TopicSpec] = field(default_factory=dict)

    def with_base_port(self, base_port: int | None) -> Topology:
        """Shift every port so the lowest one becomes ``base_port`` (None: unchanged)."""
        if base_port is None:
            return self
        lowest = min(spec.port for spec in self.services.values())
        shifted = {
            name: replace(spec, port=spec.port - lowest + base_port)
            for name, spec in self.services.items()
        }
        highest = max(spec.port for spec in shifted.values())
        if base_port < 1 or highest > 65535:
            raise TopologyError(
                f"--base-port {base_port} puts ports outside 1..65535 (need {len(shifted)} ports)"
            )
        return replace(self, services=shifted)

    def callers_of(self, target: str) -> list[str]:
        return [name for name, spec in self.services.items() if target in spec.dependencies()]

    def consumers_of(self, topic: str) -> list[str]:
        """The services (each its own consumer group) that consume ``topic``."""
        return [name for name, spec in self.services.items()
                if any(c.topic == topic for c in spec.consumes)]

    def publishers_of(self, topic: str) -> list[str]:
        return [name for name, spec in self.services.items() if topic in spec.publishes()]

    @property
    def targets(self) -> list[str]:
        return [*self.services, *self.virtual]


def load_topology(path: Path | str | None = None) -> Topology:
    """Read and check a topology file (default: the repository's catalog/topology.yaml)."""
    source = Path(path) if path is not None else DEFAULT_TOPOLOGY
    raw = read_document(source)
    try:
        return parse_topology(raw, source)
    except TopologyError as exc:
        raise TopologyError(f"{source}: {exc}") from exc


def parse_topology(raw: object, source: Path | None = None) -> Topology:
    """Build a Topology from the YAML document's data (see catalog/topology.yaml)."""
    doc = _mapping(raw, "the document")
    defaults = _mapping(doc.get("defaults", {}), "defaults")
    default_version = str(defaults.get("version", "1.0.0"))
    default_work = _number(defaults.get("work_ms", 0), "defaults.work_ms")
    default_timeout = _number(defaults.get("timeout_ms", 1000), "defaults.timeout_ms")

    virtual: dict[str, VirtualSpec] = {}
    for name, entry in _mapping(doc.get("virtual", {}), "virtual").items():
        where = f"virtual.{name}"
        item = _mapping(entry, where)
        _check_name(name, where)
        if "db_system" not in item:
            raise TopologyError(f"{where} needs db_system (e.g. postgresql, redis)")
        namespace = item.get("db_namespace")
        virtual[name] = VirtualSpec(
            name=name,
            db_system=str(item["db_system"]),
            db_namespace=None if namespace is None else str(namespace),
            latency_ms=_number(item.get("latency_ms", 1), f"{where}.latency_ms"),
        )

    topics: dict[str, TopicSpec] = {}
    for name, entry in _mapping(doc.get("topics", {}), "topics").items():
        where = f"topics.{name}"
        _check_name(name, where)
        item = _mapping(entry, where)
        system = item.get("system")
        if not isinstance(system, str) or not system:
            raise TopologyError(f"{where} needs system (the messaging.system, e.g. kafka)")
        topics[name] = TopicSpec(name=name, system=system)

    raw_services = _mapping(doc.get("services"), "services")
    if not raw_services:
        raise TopologyError("services is empty: the shop needs at least one service")
    names = set(raw_services)
    services: dict[str, ServiceSpec] = {}
    ports: dict[int, str] = {}
    for name, entry in raw_services.items():
        where = f"services.{name}"
        _check_name(name, where)
        if name in virtual:
            raise TopologyError(f"{where}: the name is also a virtual dependency")
        item = _mapping(entry, where)
        port = check_port(item.get("port"), where)
        if port in ports:
            raise TopologyError(f"{where}.port {port} is already used by {ports[port]}")
        ports[port] = name
        routes = tuple(
            _route(r, f"{where}.routes[{i}]", names, virtual, topics, default_timeout)
            for i, r in enumerate(_list(item.get("routes", []), f"{where}.routes"))
        )
        if not routes:
            raise TopologyError(f"{where}.routes is empty: give the service at least one route")
        keys = [(r.method, r.path) for r in routes]
        if len(set(keys)) != len(keys):
            raise TopologyError(f"{where}.routes lists the same METHOD /path twice")
        services[name] = ServiceSpec(
            name=name,
            port=port,
            version=str(item.get("version", default_version)),
            work_ms=_number(item.get("work_ms", default_work), f"{where}.work_ms"),
            routes=routes,
            consumes=_consumes(item.get("consumes", []), f"{where}.consumes", topics),
        )
    return Topology(services=services, virtual=virtual, source=source, topics=topics)


def split_route(text: object, where: str) -> tuple[str, str]:
    """'GET /path' -> ('GET', '/path')."""
    parts = str(text).split()
    if len(parts) != 2 or parts[0].upper() not in HTTP_METHODS or not parts[1].startswith("/"):
        raise TopologyError(f'{where} must look like "GET /path", got {text!r}')
    return parts[0].upper(), parts[1]


def _route(
    raw: object,
    where: str,
    services: set[str],
    virtual: dict[str, VirtualSpec],
    topics: dict[str, TopicSpec],
    default_timeout: float,
) -> RouteSpec:
    item = _mapping(raw, where)
    method, path = split_route(item.get("route"), f"{where}.route")
    if path != "/" and path.startswith(_RESERVED_PREFIXES):
        raise TopologyError(f"{where}: {path} is reserved ({', '.join(_RESERVED_PREFIXES)})")
    calls = []
    for i, c in enumerate(_list(item.get("calls", []), f"{where}.calls")):
        cw = f"{where}.calls[{i}]"
        call = _mapping(c, cw)
        target = call.get("to")
        required = call.get("required", True)
        if not isinstance(required, bool):
            raise TopologyError(f"{cw}.required must be true or false, got {required!r}")
        timeout = _number(call.get("timeout_ms", default_timeout), f"{cw}.timeout_ms")
        if timeout <= 0:
            raise TopologyError(f"{cw}.timeout_ms must be positive")
        if target in virtual:
            operation = call.get("operation")
            if not operation:
                raise TopologyError(f"{cw} calls virtual {target}: give an operation (SELECT)")
            calls.append(CallSpec(str(target), "db", required, timeout, operation=str(operation)))
        elif target in services:
            m, p = split_route(call.get("route"), f"{cw}.route")
            calls.append(CallSpec(str(target), "service", required, timeout, method=m, path=p))
        else:
            known = sorted(services | set(virtual))
            raise TopologyError(f"{cw}.to {target!r} is not a service or virtual: {known}")
    publishes = []
    for i, topic in enumerate(_list(item.get("publishes", []), f"{where}.publishes")):
        if topic not in topics:
            raise TopologyError(f"{where}.publishes[{i}] {topic!r} is not a topic: "
                                f"{sorted(topics)} (declare it under topics:)")
        publishes.append(str(topic))
    return RouteSpec(method=method, path=path, calls=tuple(calls),
                     publishes=tuple(dict.fromkeys(publishes)))


def _consumes(raw: object, where: str, topics: dict[str, TopicSpec]) -> tuple[ConsumerSpec, ...]:
    out: list[ConsumerSpec] = []
    for i, entry in enumerate(_list(raw, where)):
        cw = f"{where}[{i}]"
        item = _mapping(entry, cw)
        topic = item.get("topic")
        if topic not in topics:
            raise TopologyError(f"{cw}.topic {topic!r} is not a topic: {sorted(topics)} "
                                "(declare it under topics:)")
        if any(c.topic == topic for c in out):
            raise TopologyError(f"{cw}: {topic} is consumed twice by one service")
        batch = item.get("max_batch", 1)
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1000:
            raise TopologyError(f"{cw}.max_batch must be an integer in 1..1000, got {batch!r}")
        poll = _number(item.get("poll_ms", 500), f"{cw}.poll_ms")
        if not 10 <= poll <= 60_000:
            raise TopologyError(f"{cw}.poll_ms must be in 10..60000, got {poll:g}")
        out.append(ConsumerSpec(topic=str(topic), max_batch=batch, poll_ms=poll))
    return tuple(out)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(f"{where} must be a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TopologyError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise TopologyError(f"{where} must be a non-negative number, got {value!r}")
    return float(value)


def _check_name(name: str, where: str) -> None:
    if not _NAME.match(name):
        raise TopologyError(f"{where}: names are lowercase letters, digits and dashes")
