"""The typed configuration: each section's defaults, and bad values refused with the field
named, before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.config import (
    CheckpointConfig,
    CollectorConfig,
    DiagnosisConfig,
    EdgeConfig,
    GraphConfig,
    OwnershipConfig,
)
from collector.limits import MemoryLimits
from collector.pairing import PairingConfig
from collector.wiring import build_service


@pytest.mark.parametrize(("make", "field"), [
    (lambda: GraphConfig(max_nodes=0), "GraphConfig.max_nodes"),
    (lambda: GraphConfig(pairing_ttl_s=float("nan")), "GraphConfig.pairing_ttl_s"),
    (lambda: GraphConfig(pairing_max_items=-1), "GraphConfig.pairing_max_items"),
    (lambda: EdgeConfig(body_timeout_s=0), "EdgeConfig.body_timeout_s"),
    (lambda: EdgeConfig(max_inflight_requests=-1), "EdgeConfig.max_inflight_requests"),
    (lambda: EdgeConfig(max_connections=True), "EdgeConfig.max_connections"),
    (lambda: EdgeConfig(ingest_token=""), "EdgeConfig.ingest_token"),
    (lambda: CheckpointConfig(interval_s=-1), "CheckpointConfig.interval_s"),
    (lambda: OwnershipConfig(catalog_poll_s=0), "OwnershipConfig.catalog_poll_s"),
    (lambda: CollectorConfig(retention_s=0), "CollectorConfig.retention_s"),
    (lambda: DiagnosisConfig(baseline_s=-5), "diagnosis option baseline_s"),
    (lambda: DiagnosisConfig.from_options({"quiet": 1}), "unknown diagnosis option"),
])
def test_a_bad_value_is_refused_naming_its_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()  # type: ignore[operator]


def test_pairing_follows_the_memory_budget_unless_given() -> None:
    small, big = MemoryLimits.from_budget(128), MemoryLimits.from_budget(1024)
    assert GraphConfig().pairing_config(small).max_items == small.pairing_max_items
    assert GraphConfig().pairing_config(big).max_seen == big.max_seen_spans
    assert GraphConfig(pairing_max_items=7).pairing_config(big).max_items == 7
    tempo = PairingConfig.tempo()
    assert GraphConfig(pairing=tempo).pairing_config(big) is tempo


def test_each_section_reaches_its_concern() -> None:
    service = build_service(CollectorConfig(
        graph=GraphConfig(max_nodes=12, max_edges=34, pairing_ttl_s=0.5),
        diagnosis=DiagnosisConfig(trace_quiet_s=0.25, span_budget=0),
        memory_budget_mb=512))
    g = service.parts["graph"]
    assert (g.max_nodes, g.max_edges, g.pairer.config.ttl_s) == (12, 34, 0.5)
    d = service.parts["diagnosis"]
    assert d.traces.assembler.quiet_s == 0.25 and d.traces.span_budget == 0
    assert d.traces.memory == MemoryLimits.from_budget(512)


def test_the_command_line_refuses_a_bad_diagnosis_option() -> None:
    r = subprocess.run([sys.executable, "-m", "collector", "--diagnosis", "baseline_s=-3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--diagnosis: diagnosis option baseline_s must be a number >= 0" in r.stderr


def test_the_command_line_refuses_an_archive_period_longer_than_the_retention() -> None:
    r = subprocess.run([sys.executable, "-m", "collector", "--retention", "30",
                        "--archive-every", "60"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--archive-every 60 is longer than --retention 30" in r.stderr
