"""The topology file and fault updates: the shared contract and the messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo_services.faults import (
    BAD_DEPLOY_ERROR_RATE,
    EPISODE_GAP_S,
    EVIDENCE_KEEP,
    Fault,
    FaultError,
    FaultEvidence,
    apply_update,
    parse_update,
)
from demo_services.topology import TopologyError, load_topology, parse_topology


def test_demo_topology_matches_the_shared_contract() -> None:
    topology = load_topology()
    ports = {name: spec.port for name, spec in topology.services.items()}
    assert ports == {
        "frontend": 8101, "ad": 8102, "product-catalog": 8103, "recommendation": 8104,
        "checkout": 8105, "cart": 8106, "shipping": 8107, "quote": 8108, "payment": 8109,
        "currency": 8110, "email": 8111, "fraud-detection": 8112,
    }
    calls = {
        (name, call.target, call.required)
        for name, spec in topology.services.items()
        for route in spec.routes
        for call in route.calls
    }
    assert calls == {
        ("frontend", "product-catalog", True), ("frontend", "currency", True),
        ("frontend", "cart", True), ("frontend", "recommendation", False),
        ("frontend", "ad", False), ("frontend", "checkout", True),
        ("recommendation", "product-catalog", True),
        ("checkout", "cart", True), ("checkout", "currency", True), ("checkout", "payment", True),
        ("checkout", "shipping", True), ("checkout", "orders", True),
        ("cart", "redis", True), ("payment", "fraud-detection", True), ("shipping", "quote", True),
    }
    # The confirmation mail is asynchronous: checkout publishes, email consumes in batches.
    assert topology.topics["order-events"].system == "kafka"
    assert {name: spec.publishes() for name, spec in topology.services.items()
            if spec.publishes()} == {"checkout": ["order-events"]}
    assert topology.consumers_of("order-events") == ["email"]
    (consumer,) = topology.services["email"].consumes
    assert consumer.max_batch > 1 and consumer.poll_ms <= 1000
    assert topology.virtual["orders"].db_system == "postgresql"
    assert topology.virtual["orders"].db_namespace == "orders"
    assert topology.virtual["redis"].db_namespace is None
    assert topology.with_base_port(20000).services["fraud-detection"].port == 20011


def test_topology_errors_name_the_entry() -> None:
    base = {"services": {"a": {"port": 1, "routes": [{"route": "GET /", "calls": [
        {"to": "nowhere", "route": "GET /x"}]}]}}}
    with pytest.raises(TopologyError, match=r"services\.a\.routes\[0\]\.calls\[0\]\.to 'nowhere'"):
        parse_topology(base)
    dup = {"services": {"a": {"port": 5, "routes": [{"route": "GET /"}]},
                        "b": {"port": 5, "routes": [{"route": "GET /"}]}}}
    with pytest.raises(TopologyError, match="already used by a"):
        parse_topology(dup)
    with pytest.raises(TopologyError, match='must look like "GET /path"'):
        parse_topology({"services": {"a": {"port": 1, "routes": [{"route": "/nomethod"}]}}})


def test_topic_errors_name_the_entry() -> None:
    def shop(**email: object) -> dict[str, object]:
        return {"topics": {"order-events": {"system": "kafka"}}, "services": {
            "checkout": {"port": 1, "routes": [{"route": "POST /orders",
                                                "publishes": ["order-events"]}]},
            "email": {"port": 2, "routes": [{"route": "POST /send"}], **email}}}

    parsed = parse_topology(shop(consumes=[{"topic": "order-events", "max_batch": 5}]))
    assert parsed.services["email"].consumes[0].poll_ms == 500  # the default
    assert parsed.publishers_of("order-events") == ["checkout"]
    with pytest.raises(TopologyError, match=r"services\.email\.consumes\[0\]\.topic 'orders'"):
        parse_topology(shop(consumes=[{"topic": "orders"}]))
    with pytest.raises(TopologyError, match=r"consumes\[0\]\.max_batch must be an integer"):
        parse_topology(shop(consumes=[{"topic": "order-events", "max_batch": 0}]))
    with pytest.raises(TopologyError, match=r"consumes\[0\]\.poll_ms must be in 10\.\.60000"):
        parse_topology(shop(consumes=[{"topic": "order-events", "poll_ms": 5}]))
    with pytest.raises(TopologyError, match="consumed twice"):
        parse_topology(shop(consumes=[{"topic": "order-events"}] * 2))
    unknown = shop()
    unknown["topics"] = {}
    with pytest.raises(TopologyError, match=r"routes\[0\]\.publishes\[0\] 'order-events'"):
        parse_topology(unknown)
    with pytest.raises(TopologyError, match=r"topics\.t needs system"):
        parse_topology({"topics": {"t": {}}, "services": {"a": {"port": 1, "routes": [
            {"route": "GET /"}]}}})


def test_missing_topology_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path / "nope.yaml")


def test_fault_updates_validate_and_merge() -> None:
    fault = apply_update(Fault(), parse_update({"error_rate": 0.25}))
    fault = apply_update(fault, parse_update({"latency_ms": 100}))
    assert fault == Fault(error_rate=0.25, latency_ms=100.0)
    bad_deploy = apply_update(Fault(), parse_update({"version": "2.0.0"}))
    assert bad_deploy == Fault(error_rate=BAD_DEPLOY_ERROR_RATE, version="2.0.0")
    assert apply_update(bad_deploy, parse_update({"version": None})).version is None
    for body, message in (
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"error_rate": True}, "between 0 and 1"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"down": "yes"}, "true or false"),
        ({"colour": 1}, "unknown fault field"),
        ([], "JSON object"),
    ):
        with pytest.raises(FaultError, match=message):
            parse_update(body)
    with pytest.raises(FaultError, match="services only"):
        parse_update({"version": "1"}, virtual=True)


def test_cpu_hog_is_a_whole_number_of_threads_on_a_service() -> None:
    for threads in (0, 1, 4):
        assert parse_update({"cpu_hog": threads}) == {"cpu_hog": threads}
    fault = apply_update(Fault(error_rate=0.1), parse_update({"cpu_hog": 2}))
    assert fault == Fault(error_rate=0.1, cpu_hog=2) and not fault.is_clear
    assert fault.to_json()["cpu_hog"] == 2
    assert apply_update(fault, parse_update({"cpu_hog": 0})).cpu_hog == 0
    for bad in (True, False, -1, 5, 1.5, 2.0, "2", None):
        with pytest.raises(FaultError, match=r"cpu_hog must be .*between 0 \(off\) and 4"):
            parse_update({"cpu_hog": bad})
    with pytest.raises(FaultError, match="cpu_hog applies to services only"):
        parse_update({"cpu_hog": 1}, virtual=True)
    # How a clear reaches a virtual dependency's callers: the whole fault, cpu_hog 0 included.
    assert parse_update(Fault().to_json(), virtual=True)["cpu_hog"] == 0


def test_fault_evidence_keeps_each_episodes_first_requests_per_target() -> None:
    now = [100.0]
    evidence = FaultEvidence(clock=lambda: now[0])
    assert evidence.to_json() == {}
    for _ in range(EVIDENCE_KEEP + 3):
        evidence.record("payment")
        now[0] += 1.0
    evidence.record("orders")
    rec = evidence.to_json()
    assert rec["payment"]["first"] == [100.0 + i for i in range(EVIDENCE_KEEP)]
    assert rec["payment"]["count"] == EVIDENCE_KEEP + 3
    assert rec["payment"]["last"] == 100.0 + EVIDENCE_KEEP + 2
    assert rec["orders"] == {"first": [now[0]], "count": 1, "last": now[0]}
    # Within the gap: the same episode; past it: a new one, its own first requests.
    now[0] = rec["payment"]["last"] + EPISODE_GAP_S
    evidence.record("payment")
    assert evidence.to_json()["payment"]["count"] == EVIDENCE_KEEP + 4
    now[0] += EPISODE_GAP_S + 0.1
    evidence.record("payment")
    assert evidence.to_json()["payment"] == {"first": [now[0]], "count": 1, "last": now[0]}
    # The record is a copy: changing it changes nothing kept.
    evidence.to_json()["payment"]["first"].append(0.0)
    assert evidence.to_json()["payment"]["first"] == [now[0]]
