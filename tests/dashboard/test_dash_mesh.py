"""What only the service mesh sees (collector.mesh) on the dashboard: a "no traces" service and
a mesh-only call drawn distinctly, and both figure sets on the details panel."""

from __future__ import annotations

from typing import Any

from dash_graphs import demo_graph

from dashboard import elements as E
from dashboard import positions as P
from dashboard import views as V
from dashboard.state import compact_graph

MESH_EDGE = {"mesh": "istio", "reporter": "source", "rate_rps": 4.0, "error_ratio": 0.2,
             "p50_ms": 30.0, "p95_ms": 48.0, "p99_ms": 50.0, "response_flags": {"URX": 10}}


def _graph() -> dict[str, Any]:
    g = demo_graph()
    g["nodes"].append({"id": "legacy-pricing", "kind": "service", "team": "orders",
                       "health": "healthy", "rate_rps": 4.0, "error_ratio": 0.2,
                       "no_traces": True, "traced": False,
                       "mesh": {**MESH_EDGE, "workloads": ["legacy-pricing-v1"]}})
    g["edges"].append({"source": "checkout", "target": "legacy-pricing", "rate_rps": 4.0,
                       "error_ratio": 0.2, "traced": False, "mesh": MESH_EDGE})
    for e in g["edges"]:
        if (e["source"], e["target"]) == ("checkout", "payment"):
            e["traced"] = True
            e["mesh"] = {**MESH_EDGE, "rate_rps": 9.5, "error_ratio": 0.01}
    return compact_graph(g)


def _text(c: Any) -> str:
    if isinstance(c, str | int | float):
        return str(c)
    if isinstance(c, list | tuple):
        return " ".join(_text(x) for x in c)
    children = getattr(c, "children", None)
    return _text(children) if children is not None else ""


def test_no_traces_service_and_mesh_only_call_are_drawn_distinctly() -> None:
    g = _graph()
    els = {el["data"]["id"]: el for el in E.build_elements(g, P.assign(None, g["nodes"]))}
    node = els[E.node_el_id("legacy-pricing")]
    assert "no-traces" in node["classes"].split()
    assert "(no traces)" in node["data"]["label"]
    assert "no-traces" not in els[E.node_el_id("checkout")]["classes"].split()
    mesh_only = [el for el in els.values() if el["data"].get("source") is not None
                 and "mesh-only" in el.get("classes", "").split()]
    assert len(mesh_only) == 1
    sheet = {rule["selector"] for rule in E.stylesheet()}
    assert {"node.no-traces", "edge.mesh-only"} <= sheet


def test_details_panel_shows_trace_and_mesh_figures() -> None:
    g = _graph()
    both = _text(V.details_panel(g, E.edge_el_id("checkout", "payment")))
    assert "istio sidecars (reporter=source)" in both
    assert "9.5" in both  # the mesh's rate next to the trace figures
    only = _text(V.details_panel(g, E.edge_el_id("checkout", "legacy-pricing")))
    assert "seen by the service mesh only" in only and "URX 10" in only
    svc = _text(V.details_panel(g, E.node_el_id("legacy-pricing")))
    assert "no traces" in svc
    plain = _text(V.details_panel(g, E.edge_el_id("frontend", "checkout")))
    assert "sidecars" not in plain
