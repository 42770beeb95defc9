"""A call that names only an address and a port (a refused connection: no server span, no
peer.service) is drawn on, and blamed on, the service known to serve that port, when that is
certain; a DNS name keeps its own node, and a port two services serve names neither."""

from __future__ import annotations

import time

from live_collector import Collector, edge_calls, sdk_provider
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector.model import SpanKind as Kind
from collector.model import SpanRecord
from collector.ports import PortMap, is_literal_address, peer_of


def server_span(service: str, port: int) -> SpanRecord:
    return SpanRecord(b"t" * 16, b"s" * 8, b"", service, "GET /", int(Kind.SERVER), 0, 1,
                      False, {"server.port": port}, {"service.name": service})


def test_literal_addresses_only() -> None:
    for literal in ("127.0.0.1", "::1", "[::1]", "10.0.3.7", "localhost", "LOCALHOST"):
        assert is_literal_address(literal), literal
    for name in ("payment", "api.stripe.com", "payment.shop.svc.cluster.local", "1.2.3"):
        assert not is_literal_address(name), name


def test_the_port_names_the_service_only_when_certain() -> None:
    ports = PortMap()
    ports.learn(server_span("payment", 8109))
    call = {"server.address": "127.0.0.1", "server.port": 8109}
    assert peer_of(call) == "127.0.0.1"  # no map: the address
    assert peer_of(call, ports) == "payment"
    assert peer_of({"net.peer.name": "localhost", "net.peer.port": "8109"}, ports) == "payment"
    # A DNS name says which service it is: never replaced through the port.
    assert peer_of({"server.address": "api.stripe.com", "server.port": 8109},
                   ports) == "api.stripe.com"
    # A name attribute wins over any address.
    assert peer_of({**call, "peer.service": "billing"}, ports) == "billing"
    # Another service seen serving the same port (another host): the port names neither.
    ports.learn(server_span("ledger", 8109))
    assert ports.service_at(8109) is None
    assert peer_of(call, ports) == "127.0.0.1"
    ports.learn(server_span("payment", 8109))  # and stays ambiguous
    assert peer_of(call, ports) == "127.0.0.1"


def test_the_map_is_bounded_and_counts_what_it_left_out() -> None:
    ports = PortMap(max_ports=2)
    for i, port in enumerate((9001, 9002, 9003, 9004)):
        ports.learn(server_span(f"s{i}", port))
    assert len(ports) == 2 and ports.dropped == 2
    assert ports.service_at(9003) is None


def test_a_refused_call_is_drawn_on_the_service_serving_the_port() -> None:
    """Real collector process, official SDK: payments-svc serves port 18109 (its server spans
    say so); checkout-x's calls to 127.0.0.1:18109 are refused (an error client span, no
    server span); they land on payments-svc. One to api.example.com:18109 keeps its name."""
    collector = Collector("--pairing-ttl", "0.3")
    try:
        server = sdk_provider(collector.url, "payments-svc")
        client = sdk_provider(collector.url, "checkout-x")
        with server.get_tracer("t").start_as_current_span(
                "POST /pay", kind=SpanKind.SERVER,
                attributes={"server.address": "127.0.0.1", "server.port": 18109}):
            pass
        server.force_flush()
        time.sleep(0.5)  # the server span is in before the refused calls
        tracer = client.get_tracer("t")
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
            for address, n in (("127.0.0.1", 3), ("api.example.com", 2)):
                for _ in range(n):
                    with tracer.start_as_current_span(
                            "POST", kind=SpanKind.CLIENT,
                            attributes={"server.address": address,
                                        "server.port": 18109}) as span:
                        span.set_status(Status(StatusCode.ERROR, "connection refused"))
        client.force_flush()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                edge_calls(collector.url, "checkout-x", "payments-svc") < 3
                or edge_calls(collector.url, "checkout-x", "api.example.com") < 2):
            time.sleep(0.1)
        assert edge_calls(collector.url, "checkout-x", "payments-svc") == 3
        assert edge_calls(collector.url, "checkout-x", "api.example.com") == 2
        assert edge_calls(collector.url, "checkout-x", "127.0.0.1") == 0
    finally:
        collector.stop()
