"""The graph against upstream fixtures: Tempo's and the otelcol servicegraph connector's test
traces must give the edges and counts their own tests assert (reference-traces/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector import replay
from collector.exposition import IngestCollector, IngestCounters, make_registry
from collector.graph import GraphCollector, TrafficGraph
from collector.pairing import PairingConfig

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "reference-traces"

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"reference traces not found at {SHARED} (the shared folder next to the repository)",
)

Edges = dict[tuple[str, str], tuple[str, int, int]]


def run(name: str, pairing: PairingConfig) -> tuple[TrafficGraph, Edges]:
    spans = replay.load_reference(SHARED / name)
    g = TrafficGraph(started_at=0.0, pairing=pairing)
    g.consume(spans, 100.0)
    g.tick(100.0 + pairing.ttl_s)  # everything unpaired expires, as upstream's "wait 1ns"
    edges = {
        k: (ctype, g.totals.total(*k), g.totals.failed(*k))
        for k, ctype in g.connection_types.items()
    }
    return g, edges


def test_tempo_queue_database() -> None:
    _, edges = run("tempo--trace-with-queue-database.json", PairingConfig.tempo())
    assert edges == {
        ("mythical-requester", "mythical-server"): ("", 1, 0),
        ("mythical-server", "postgres"): ("database", 1, 0),
        ("mythical-requester", "mythical-recorder"): ("messaging_system", 1, 0),
    }


def test_tempo_failed_requests() -> None:
    _, edges = run("tempo--trace-with-failed-requests.json", PairingConfig.tempo())
    assert edges[("mythical-requester", "mythical-server")] == ("", 1, 1)
    assert edges[("mythical-server", "postgres")] == ("database", 1, 1)


def test_tempo_virtual_nodes() -> None:
    _, edges = run("tempo--trace-with-virtual-nodes.json", PairingConfig.tempo())
    assert edges == {
        ("user", "mythical-server"): ("virtual_node", 1, 0),
        ("mythical-requester", "external-payments-platform"): ("virtual_node", 1, 0),
        ("external-producer", "internal-consumer"): ("virtual_node", 1, 0),
    }


@pytest.mark.parametrize(
    ("fixture", "database"),
    [
        ("trace-without-database-name", "mythical-database"),
        ("trace-with-queue-database", "postgres"),
        ("trace-with-queue-database2", "mythical-database"),
        ("trace-with-queue-database3", "mythical-database"),
        ("trace-with-queue-database4", "mythical-database:5432"),
        ("trace-with-queue-database5", "mythical-database"),
        ("trace-with-db-namespace", "mydb"),
        ("trace-with-both-db-attributes", "priority-db"),
        ("trace-with-db-system-name", "postgresql"),
        ("trace-with-db-system-and-system-name", "mssql"),
    ],
)
def test_tempo_database_virtual_nodes(fixture: str, database: str) -> None:
    g, edges = run(f"tempo--{fixture}.json", PairingConfig.tempo())
    assert edges[("mythical-server", database)] == ("database", 1, 0)
    # Histogram counts equal the total, as Tempo's test asserts.
    (_, e), = [(k, e) for k, e in g.totals.items() if k[:2] == ("mythical-server", database)]
    assert sum(e.server) == sum(e.client) == 1


def test_tempo_virtual_nodes_fixture_has_no_database_edge() -> None:
    _, edges = run("tempo--trace-with-virtual-nodes.json", PairingConfig.tempo())
    assert ("mythical-server", "mythical-database") not in edges


def test_tempo_expired_edges() -> None:
    g, edges = run("tempo--trace-with-expired-edges.json", PairingConfig.tempo())
    c = g.pairer.counters
    assert c.expired == 1  # the unmatched SERVER span
    assert c.dropped == 0
    assert edges[("user", "mythical-server")] == ("virtual_node", 1, 0)
    assert edges[("mythical-server", "mythical-requester")] == ("", 1, 0)


def test_tempo_max_items_one_drops_and_says_so() -> None:
    spans = replay.load_reference(SHARED / "tempo--trace-with-queue-database.json")
    g = TrafficGraph(started_at=0.0, pairing=PairingConfig.tempo(max_items=1))
    g.consume(spans, 100.0)
    assert g.pairer.counters.dropped > 0
    assert g.pairer.last_error is not None and "full" in str(g.pairer.last_error)


def test_tempo_histograms_through_metrics() -> None:
    g, _ = run("tempo--trace-with-queue-database.json", PairingConfig.tempo())
    registry = make_registry(GraphCollector(g), IngestCollector(IngestCounters()))
    text = generate_latest(registry).decode()
    sums = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_seconds_sum"):
                sums[(s.name, s.labels["client"], s.labels["server"])] = s.value
    rs = ("mythical-requester", "mythical-server")
    assert sums[("traces_service_graph_request_client_seconds_sum", *rs)] == pytest.approx(
        0.045, abs=0.001)
    assert sums[("traces_service_graph_request_server_seconds_sum", *rs)] == pytest.approx(
        0.029, abs=0.001)
    db = ("mythical-server", "postgres")
    assert sums[("traces_service_graph_request_client_seconds_sum", *db)] == pytest.approx(
        0.023, abs=0.001)
    assert sums[("traces_service_graph_request_server_seconds_sum", *db)] == pytest.approx(
        0.023, abs=0.001)


def test_otelcol_virtual_node_label() -> None:
    _, edges = run("otelcol-contrib--virtual-node-label-trace.yaml", PairingConfig.otelcol())
    assert edges == {
        ("foo-server", "unknown"): ("virtual_node", 1, 0),
        ("user", "bar-requester"): ("virtual_node", 1, 0),
    }


def test_otelcol_virtual_node_label_client() -> None:
    _, edges = run("otelcol-contrib--virtual-node-label-client-trace.yaml",
                   PairingConfig.otelcol())
    assert edges == {("user", "bar-requester"): ("virtual_node", 1, 0)}


@pytest.mark.parametrize(
    "fixture",
    ["otelcol-contrib--extra-dimensions-queue-db-trace.yaml",
     "otelcol-contrib--messaging-system-trace.yaml"],
)
def test_otelcol_direct_edge(fixture: str) -> None:
    _, edges = run(fixture, PairingConfig.otelcol())
    assert edges == {("foo-server", "bar-requester"): ("", 1, 0)}


def test_conway_defaults_name_root_consumer_caller_and_skip_peerless_clients() -> None:
    # Conway's defaults follow Tempo on these points.
    _, edges = run("tempo--trace-with-virtual-nodes.json", PairingConfig())
    assert ("external-producer", "internal-consumer") in edges
    _, edges = run("otelcol-contrib--virtual-node-label-trace.yaml", PairingConfig())
    assert ("foo-server", "unknown") not in edges


def test_jaeger_large_dependency_graph() -> None:
    deps = json.loads((SHARED / "jaeger-ui--dependencygraph-large.json").read_text())
    spans = replay.dependencies_to_spans(deps, now_ns=100 * 10**9)
    g = TrafficGraph(started_at=0.0)
    g.consume(spans, 100.0)
    assert len(g.connection_types) == 4271
    assert len(g.kinds) == 1238
    assert g.dropped_edges == 0 and g.dropped_nodes == 0


def test_queue_mode_draws_no_queue_where_the_spans_name_no_destination() -> None:
    # Conway's default pairing (queue nodes on) over the upstream messaging fixtures. Neither
    # names a destination the way the semantic conventions do: Tempo's RabbitMQ spans carry
    # `messaging.destination: ""` (the queue is in `messaging.rabbitmq.routing_key`), Zipkin's
    # Kafka spans only Brave's `kafka.topic` tag. So no queue node is invented: the producer
    # and its consumer meet directly, with the edges and counts Tempo's own test asserts (the
    # demo's order-events, which does name it, is drawn through its queue:
    # tests/demo_services/test_live_messaging.py).
    g, edges = run("tempo--trace-with-queue-database.json", PairingConfig())
    assert edges[("mythical-requester", "mythical-recorder")] == ("messaging_system", 1, 0)
    assert ("mythical-requester", "mythical-server") in edges and not g.queues
    g, edges = run("zipkin--messaging-kafka.json", PairingConfig())
    assert edges[("servicea", "serviceb")] == ("messaging_system", 2, 0)
    assert not g.queues and not any(":" in node for edge in edges for node in edge)
