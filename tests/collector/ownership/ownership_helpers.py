"""Shared helpers for the ownership tests: test catalogs, spans and hand-built snapshots."""

from __future__ import annotations

from pathlib import Path

from collector.model import Attributes, Edge, Node, Snapshot, SpanKind, SpanRecord

TESTDATA = Path(__file__).parent / "testdata"
DEMO_CATALOG = Path(__file__).parents[3] / "catalog" / "catalog-info.yaml"

GROUP_X = """\
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: team-x
  annotations:
    slack.com/channel: "#team-x"
spec:
  type: team
  profile:
    displayName: Team X
"""

COMPONENT_SVC = """\
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: svc
spec:
  type: service
  lifecycle: production
  owner: team-x
"""


def docs(*documents: str) -> str:
    return "---\n" + "---\n".join(documents)


def write_catalog(tmp_path: Path, *documents: str) -> Path:
    path = tmp_path / "catalog-info.yaml"
    path.write_text(docs(*documents))
    return path


def span(service: str, resource: Attributes, n: int = 1) -> SpanRecord:
    return SpanRecord(
        trace_id=bytes(16), span_id=n.to_bytes(8, "big"), parent_span_id=b"",
        service=service, name="GET /", kind=SpanKind.SERVER, start_ns=0, end_ns=1_000,
        error=False, attributes={}, resource=resource,
    )


def snapshot(
    nodes: dict[str, str],
    edges: list[tuple[str, str, int, int, float | None]],
    window_s: float = 60.0,
    health: dict[str, str] | None = None,
) -> Snapshot:
    """A snapshot as the traffic appender leaves it: ``nodes`` maps id -> kind, each edge is
    (source, target, calls, errors, p95_ms)."""
    snap = Snapshot(window_s=window_s, generated_at=1000.0)
    for node_id, kind in nodes.items():
        snap.nodes[node_id] = Node(id=node_id, kind=kind,
                                   health=(health or {}).get(node_id, "healthy"))
    for source, target, calls, errors, p95 in edges:
        snap.edges[(source, target)] = Edge(
            source=source, target=target, rate_rps=calls / window_s,
            error_ratio=errors / calls if calls else 0.0, p95_ms=p95,
            health="failing" if errors else "healthy",
            meta={"calls": calls, "errors": errors},
        )
    return snap


# The demo shop's services and calls, as the brief's topology describes them.
DEMO_SERVICES = [
    "frontend", "ad", "product-catalog", "recommendation", "checkout", "cart", "shipping",
    "quote", "payment", "currency", "email", "fraud-detection",
]
DEMO_CALLS = [
    ("user", "frontend"),
    *(("frontend", s) for s in
      ("product-catalog", "currency", "cart", "recommendation", "ad", "checkout")),
    ("recommendation", "product-catalog"),
    *(("checkout", s) for s in ("cart", "currency", "payment", "shipping", "orders",
                                "kafka: order-events")),
    ("kafka: order-events", "email"),
    ("cart", "redis"),
    ("payment", "fraud-detection"),
    ("shipping", "quote"),
]


def demo_snapshot(window_s: float = 60.0) -> Snapshot:
    nodes = {s: "service" for s in DEMO_SERVICES}
    nodes.update({"user": "virtual", "orders": "virtual", "redis": "virtual",
                  "kafka: order-events": "virtual"})
    edges: list[tuple[str, str, int, int, float | None]] = [
        (s, t, 60, 3 if t == "quote" else 0, 20.0) for s, t in DEMO_CALLS
    ]
    return snapshot(nodes, edges, window_s=window_s, health={"quote": "failing"})



