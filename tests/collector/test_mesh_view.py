"""collector.mesh's pure parts: the view built from PromQL answers (caps and what they leave
out, the reporter fallback, quantiles as histogram_quantile computes them), its /metrics
collector and MeshConfig's checks. The end-to-end tests against a real Prometheus are in
tests/deploy/test_mesh_source.py."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector.config import MeshConfig
from collector.mesh import (
    MeshCollector,
    MeshSource,
    build_view,
    histogram_quantile,
    strip_version,
)


def _istio(reporter: str, src: str, dst: str, code: str = "200", flags: str = "-",
           **extra: str) -> dict[str, str]:
    return {"reporter": reporter, "source_workload": f"{src}-v1" if src != "unknown" else src,
            "source_app": src, "destination_workload": f"{dst}-v1", "destination_app": dst,
            "destination_service_name": dst, "response_code": code, "response_flags": flags,
            **extra}


def test_quantiles_interpolate_as_prometheus_does() -> None:
    # 10 in (0, 10], 10 more in (10, 20]: the median is the top of the first bucket, p75
    # halfway into the second, and anything in +Inf answers the highest finite bound.
    buckets = {10.0: 10.0, 20.0: 20.0, math.inf: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(10.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(15.0)
    assert histogram_quantile(0.99, {10.0: 0.0, 20.0: 0.0, math.inf: 5.0}) == 20.0
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {10.0: 0.0, math.inf: 0.0}) is None


def test_destination_view_is_used_when_the_source_proxy_is_not_scraped() -> None:
    counts = [(_istio("destination", "web", "api"), 40.0),
              (_istio("source", "web", "db"), 10.0),
              (_istio("destination", "web", "db"), 10.0),
              (_istio("source", "web", "db", "503", "UH"), 10.0)]
    view = build_view((counts, [], [], []), 10.0, 0.0, 100, 100)
    assert view.meshes == ["istio"]
    assert view.edges[("web", "api")].reporter == "destination"
    db = view.edges[("web", "db")]
    assert db.reporter == "source" and db.calls == 20.0 and db.errors == 10.0
    assert db.down_calls == 10.0 and db.flags == {"UH": 10.0}
    fig = view.node_figures("db")
    assert fig["no_upstream"] == 10 and fig["error_ratio"] == 0.5


def test_caps_keep_the_busiest_and_count_what_they_leave_out() -> None:
    counts = [(_istio("source", "hub", f"s{i}"), float(i + 1)) for i in range(10)]
    view = build_view((counts, [], [], []), 10.0, 0.0, 4, 3)
    assert set(view.edges) == {("hub", "s9"), ("hub", "s8"), ("hub", "s7")}
    assert len(view.nodes) == 4 and view.dropped_nodes == 0
    assert view.dropped_edges == 7
    tight = build_view((counts, [], [], []), 10.0, 0.0, 2, 10)
    assert len(tight.nodes) == 2 and tight.dropped_nodes == 9
    assert set(tight.edges) == {("hub", "s9")}


def test_linkerd_outbound_and_series_without_a_deployment() -> None:
    counts = [({"deployment": "books-v1", "dst_deployment": "authors-v2",
                "classification": "failure", "status_code": "500"}, 5.0),
              ({"deployment": "books-v1", "dst_deployment": "authors-v2",
                "classification": "success", "status_code": "200"}, 15.0),
              ({"deployment": "books-v1", "classification": "success"}, 7.0)]
    view = build_view(([], [], counts, []), 10.0, 0.0, 100, 100)
    assert view.meshes == ["linkerd"]
    e = view.edges[("books", "authors")]
    assert e.errors == 5.0 and e.calls == 20.0 and e.reporter is None
    assert view.skipped_series == 1
    assert strip_version("payment-v2") == "payment" and strip_version("redis") == "redis"


def test_collector_exports_polls_failures_and_view_size() -> None:
    source = MeshSource(MeshConfig(prometheus="http://127.0.0.1:9"))
    source.polls, source.failures = 3, 2
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshCollector(source))
    text = generate_latest(registry).decode()
    assert "conway_mesh_polls_total 3.0" in text
    assert "conway_mesh_poll_failures_total 2.0" in text
    assert "conway_mesh_dropped_edges 0.0" in text


def test_mesh_config_checks() -> None:
    with pytest.raises(ValueError, match="http"):
        MeshConfig(prometheus="prometheus:9090")
    with pytest.raises(ValueError, match="poll_s"):
        MeshConfig(prometheus="http://x", poll_s=0)
    assert MeshConfig().prometheus is None
