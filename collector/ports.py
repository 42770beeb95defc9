"""Which service serves on which port, so a call that names only an address and a port (a
refused connection to an instrumented service: no server span, no ``peer.service``) is drawn
and blamed on that service instead of a node named ``127.0.0.1``.

The map is learned from server spans (`vocabulary.SERVER_PORT_ATTRIBUTES`) and, when given, the
topology file. It answers only when it can be sure: a port two services were seen serving is
ambiguous (containers often all serve 8080) and answers nothing, and an address that is a DNS
name keeps its own name (``api.stripe.com:443`` is not the internal service on 443); only a
literal IP address or ``localhost`` is resolved through the port. Bounded by ``max_ports``;
ports past it are not learned and counted in ``dropped``. One map is shared by the graph's
pairing and the diagnosis.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from collector.model import SpanRecord
from collector.vocabulary import (
    CALLEE_KINDS,
    PEER_ADDRESS_ATTRIBUTES,
    PEER_NAME_ATTRIBUTES,
    PEER_PORT_ATTRIBUTES,
    SERVER_PORT_ATTRIBUTES,
)

MAX_PORTS = 4_096


def as_port(value: object) -> int | None:
    """A TCP port from an attribute value (int or digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 < value < 65536:
        return value
    if isinstance(value, str) and value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return None


def is_literal_address(address: str) -> bool:
    """An IP address or ``localhost``: a name that says nothing about which service it is."""
    if address.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return True


class PortMap:
    def __init__(self, max_ports: int = MAX_PORTS) -> None:
        self.max_ports = max_ports
        self._by_port: dict[int, str] = {}
        self._ambiguous: set[int] = set()
        self.dropped = 0

    def set(self, port: int, service: str) -> None:
        known = self._by_port.get(port)
        if known == service or port in self._ambiguous:
            return
        if known is not None:
            # Two services serve this port (on different hosts): it names neither.
            del self._by_port[port]
            self._ambiguous.add(port)
            return
        if len(self._by_port) + len(self._ambiguous) >= self.max_ports:
            self.dropped += 1
            return
        self._by_port[port] = service

    def learn(self, span: SpanRecord) -> None:
        if span.kind not in CALLEE_KINDS:
            return
        for key in SERVER_PORT_ATTRIBUTES:
            port = as_port(span.attributes.get(key))
            if port is not None:
                if self._by_port.get(port) != span.service:
                    self.set(port, span.service)
                return

    def service_at(self, port: int) -> str | None:
        return self._by_port.get(port)

    def __len__(self) -> int:
        return len(self._by_port)

    def resolve(self, attrs: Mapping[str, object], address: str) -> str | None:
        """The service a call to ``address`` (with the call's port attribute) reached, when
        the address is literal and the port names one service; else None."""
        if not is_literal_address(address):
            return None
        for key in PEER_PORT_ATTRIBUTES:
            port = as_port(attrs.get(key))
            if port is not None:
                return self._by_port.get(port)
        return None


def peer_of(attrs: Mapping[str, object], ports: PortMap | None = None) -> str | None:
    """The callee a client span names: ``peer.service`` (and its aliases), the database, the
    messaging system; else the service serving the address and port it called (`PortMap`);
    else the address itself (the graph's virtual node name)."""
    for key in PEER_NAME_ATTRIBUTES:
        v = attrs.get(key)
        if isinstance(v, str) and v:
            return v
    for key in PEER_ADDRESS_ATTRIBUTES:
        addr = attrs.get(key)
        if isinstance(addr, str) and addr:
            if ports is not None:
                served = ports.resolve(attrs, addr)
                if served is not None:
                    return served
            return addr
    if ports is not None:  # no address at all: the port alone
        for key in PEER_PORT_ATTRIBUTES:
            port = as_port(attrs.get(key))
            if port is not None:
                return ports.service_at(port)
    return None
