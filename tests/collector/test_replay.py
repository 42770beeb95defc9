"""Reference traces load with the counts their README states; replay helpers round-trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from collector.model import Attributes, DecodeError, SpanKind, SpanRecord
from collector.otlp import PROTOBUF, decode_traces
from collector.replay import dependencies_to_spans, load_reference, to_otlp_request
from collector.zipkin import shared_server_span_id

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference-traces"
NOW_NS = 1_800_000_000_000_000_000

# file: spans, traces, services, errors, (CLIENT, SERVER, PRODUCER, CONSUMER, other kinds),
# as /work/shared/reference-traces/README.md lists them.
QUEUE_DB = (19, 1, 3, 0, (6, 1, 1, 1, 10))
EXPECTED = {
    "tempo--trace-with-queue-database.json": QUEUE_DB,
    "tempo--trace-with-queue-database2.json": QUEUE_DB,
    "tempo--trace-with-queue-database3.json": QUEUE_DB,
    "tempo--trace-with-queue-database4.json": QUEUE_DB,
    "tempo--trace-with-queue-database5.json": QUEUE_DB,
    "tempo--trace-without-database-name.json": QUEUE_DB,
    "tempo--trace-with-db-namespace.json": QUEUE_DB,
    "tempo--trace-with-both-db-attributes.json": QUEUE_DB,
    "tempo--trace-with-db-system-name.json": QUEUE_DB,
    "tempo--trace-with-db-system-and-system-name.json": QUEUE_DB,
    "tempo--trace-with-failed-requests.json": (15, 1, 2, 3, (6, 1, 0, 0, 8)),
    "tempo--trace-with-virtual-nodes.json": (3, 2, 3, 0, (1, 1, 0, 1, 0)),
    "tempo--trace-with-expired-edges.json": (5, 1, 2, 0, (2, 3, 0, 0, 0)),
    "zipkin--smartthings-oauth-authorization.json": (175, 1, 8, 2, (95, 77, 0, 0, 3)),
    "zipkin--yelp.json": (16, 1, 6, 0, (11, 4, 0, 0, 1)),
    "zipkin--messaging-kafka.json": (28, 1, 2, 3, (0, 0, 9, 7, 12)),
    "jaeger-ui--tracegraph-testTrace.json": (11, 1, 2, 1, (3, 2, 1, 1, 4)),
    "otelcol-contrib--extra-dimensions-queue-db-trace.yaml": (2, 1, 2, 0, (1, 1, 0, 0, 0)),
    "otelcol-contrib--messaging-system-trace.yaml": (2, 1, 2, 0, (1, 1, 0, 0, 0)),
    "otelcol-contrib--virtual-node-label-trace.yaml": (2, 2, 2, 0, (1, 1, 0, 0, 0)),
    "otelcol-contrib--virtual-node-label-client-trace.yaml": (1, 1, 1, 0, (0, 1, 0, 0, 0)),
}


def _reference(name: str) -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"../shared/reference-traces not present: {REFERENCE} does not exist "
                    f"(the shared reference traces are not copied into the project)")
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"../shared/reference-traces not present: {path} is missing")
    return path


def _kinds(spans: list[SpanRecord]) -> tuple[int, int, int, int, int]:
    k = Counter(s.kind for s in spans)
    named = (k[SpanKind.CLIENT], k[SpanKind.SERVER], k[SpanKind.PRODUCER], k[SpanKind.CONSUMER])
    return (*named, len(spans) - sum(named))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_trace_loads_with_the_readme_counts(name: str) -> None:
    spans = load_reference(_reference(name))
    n_spans, n_traces, n_services, n_errors, kinds = EXPECTED[name]
    assert len(spans) == n_spans
    assert len({s.trace_id for s in spans}) == n_traces
    assert len({s.service for s in spans}) == n_services
    assert sum(s.error for s in spans) == n_errors
    assert _kinds(spans) == kinds


def test_failed_requests_errors_are_the_ones_the_readme_names() -> None:
    spans = load_reference(_reference("tempo--trace-with-failed-requests.json"))
    assert sorted((s.service, SpanKind(s.kind).name, s.name) for s in spans if s.error) == [
        ("mythical-requester", "CLIENT", "requester"),
        ("mythical-server", "CLIENT", "pg.query:INSERT"),
        ("mythical-server", "SERVER", "POST /:endpoint"),
    ]


def test_virtual_nodes_trace_keeps_peer_service() -> None:
    spans = load_reference(_reference("tempo--trace-with-virtual-nodes.json"))
    peers = {s.service: s.attributes.get("peer.service") for s in spans}
    assert peers == {"mythical-server": None, "mythical-requester": "external-payments-platform",
                     "internal-consumer": "external-producer"}


def test_smartthings_shared_server_halves_pair_with_their_clients() -> None:
    spans = load_reference(_reference("zipkin--smartthings-oauth-authorization.json"))
    raw = json.loads(_reference("zipkin--smartthings-oauth-authorization.json").read_text())
    shared = [s for s in spans if s.kind == SpanKind.SERVER
              and s.span_id == shared_server_span_id(s.trace_id, s.parent_span_id)]
    assert len(shared) == sum(1 for r in raw if r.get("shared")) == 45
    clients = {(s.trace_id, s.span_id) for s in spans if s.kind == SpanKind.CLIENT}
    paired = [s for s in shared if (s.trace_id, s.parent_span_id) in clients]
    assert paired, "no shared server half met its client half"
    services = {s.service for s in spans}
    assert services == {"account", "auth", "bouncer", "datamgmt", "dove", "paperboy", "pusher",
                        "stlogin"}


def test_jaeger_trace_maps_references_kinds_and_error_tag() -> None:
    spans = load_reference(_reference("jaeger-ui--tracegraph-testTrace.json"))
    by_name = Counter((s.service, s.name) for s in spans)
    assert by_name[("service1", "op2")] == 2 and by_name[("service1", "op7")] == 2
    [failed] = [s for s in spans if s.error]
    assert (failed.service, failed.name, failed.kind) == ("service1", "op2", SpanKind.CLIENT)
    [root] = [s for s in spans if not s.parent_span_id]
    assert (root.service, root.name, root.duration_ns) == ("service1", "op1", 390_000_000)
    # service1 op3 (CLIENT) calls service2 op1 (SERVER): the pairing keys meet.
    [client] = [s for s in spans if s.name == "op3" and s.kind == SpanKind.CLIENT]
    [server] = [s for s in spans if s.service == "service2" and s.name == "op1"]
    assert server.parent_span_id == client.span_id and server.kind == SpanKind.SERVER


def test_large_dependency_graph_replays_as_paired_spans() -> None:
    path = _reference("jaeger-ui--dependencygraph-large.json")
    spans = load_reference(path, now_ns=NOW_NS)
    assert len(spans) == 2 * 4271
    assert len({s.service for s in spans}) == 1238
    assert len({s.service for s in spans if s.kind == SpanKind.CLIENT}) == 998
    assert len({s.service for s in spans if s.kind == SpanKind.SERVER}) == 853


def test_metrics_goldens_are_not_traces() -> None:
    with pytest.raises(DecodeError, match="not a trace file.*resourceMetrics"):
        load_reference(_reference("otelcol-contrib--virtual-node-label-expected-metrics.yaml"))


def test_dependencies_to_spans_pairs_each_call() -> None:
    deps = [{"parent": "frontend", "child": "cart", "callCount": 10},
            {"parent": "cart", "child": "redis", "callCount": 3}]
    spans = dependencies_to_spans(deps, NOW_NS, calls_per_edge=3)
    assert len(spans) == 12
    clients = {(s.trace_id, s.span_id): s for s in spans if s.kind == SpanKind.CLIENT}
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    edges = Counter((clients[(s.trace_id, s.parent_span_id)].service, s.service)
                    for s in servers)
    assert edges == {("frontend", "cart"): 3, ("cart", "redis"): 3}
    assert len({s.trace_id for s in spans}) == 6
    for s in spans:
        assert s.end_ns <= NOW_NS and s.duration_ns > 0
    with pytest.raises(ValueError, match=r"dependencies\[0\]"):
        dependencies_to_spans([{"parent": "a"}], NOW_NS)


def _fields(s: SpanRecord) -> tuple[object, ...]:
    return (s.trace_id, s.span_id, s.parent_span_id, s.service, s.name, s.kind, s.start_ns,
            s.end_ns, s.error, s.attributes, s.resource, s.status_message if s.error else "")


def test_to_otlp_request_round_trips_through_the_decoder() -> None:
    resource: Attributes = {"service.name": "checkout", "service.namespace": "shop"}
    spans = [
        SpanRecord(b"\x01" * 16, b"\x02" * 8, b"", "checkout", "POST /order",
                   int(SpanKind.SERVER), 10, 20, True,
                   {"s": "x", "i": 3, "f": 1.5, "b": False, "raw": b"\x00", "l": [1, "a"],
                    "m": {"k": [True]}, "n": None}, resource, "failed"),
        SpanRecord(b"\x01" * 16, b"\x03" * 8, b"\x02" * 8, "checkout", "SELECT",
                   int(SpanKind.CLIENT), 11, 19, False, {"db.system": "postgresql"}, resource),
        SpanRecord(b"\x04" * 16, b"\x05" * 8, b"", "cart", "GET", int(SpanKind.SERVER), 1, 2,
                   False, {}, {"service.name": "cart"}),
    ]
    result = decode_traces(to_otlp_request(spans), PROTOBUF)
    assert result.rejected == 0
    assert [_fields(s) for s in result.spans] == [_fields(s) for s in spans]
    assert result.spans[0].resource is result.spans[1].resource


@pytest.mark.parametrize("name", ["zipkin--yelp.json", "tempo--trace-with-queue-database.json",
                                  "jaeger-ui--tracegraph-testTrace.json"])
def test_reference_traces_replay_through_otlp_unchanged(name: str) -> None:
    spans = load_reference(_reference(name))
    decoded = decode_traces(to_otlp_request(spans), PROTOBUF).spans
    assert sorted(map(_fields, decoded), key=repr) == sorted(map(_fields, spans), key=repr)
