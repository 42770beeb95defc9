"""Diagnosis: health, root cause versus symptoms, blast radius, incidents and who to page.

``install(service, config)`` adds, in this order after the traffic and ownership appenders:
health -> root cause -> blast radius -> incidents (publishes the open incidents); a span
consumer that assembles traces; ``GET /api/incidents``; a background task that runs the
incident lifecycle every ``evaluate_interval_s`` on a default-window snapshot; and
``service.parts["diagnosis"]`` (a ``Diagnosis``).

Options come from ``config.extra["diagnosis"]`` (all optional): ``trace_quiet_s`` (1.5),
``bucket_s`` (5), ``detect_window_s`` (20), ``recent_window_s`` (1; 0 judges the detection
window only), ``baseline_s`` (300), ``incident_quiet_s`` (30),
``evaluate_interval_s`` (1), and ``span_budget`` (20000 spans/s; 0: no budget). With them, a
fault shows as an incident a few seconds after it starts (traces finish 1.5 s after their last
span), and the incident resolves about ``detect_window_s`` + ``incident_quiet_s`` (~50 s)
after the fault is cleared.

Load: while the offered span rate is at or below ``span_budget`` every trace is analysed;
above it the diagnosis head-samples whole traces by trace id, keeping a fraction
``p = budget / rate`` and weighting each kept trace by ``1/p`` (see ``consumer``), so its cost
stays near the budget's while counts and ratios stay unbiased. The graph (``/api/graph``,
``/metrics`` service-graph series) still counts every span. ``counters()`` reports the spans
and traces sampled out and the keep fraction in force; ``/metrics`` exports them as
``conway_diagnosis_spans_sampled_out_total``, ``conway_diagnosis_traces_sampled_out_total``
and the gauge ``conway_diagnosis_keep_fraction``.

Thresholds (defaults; see each module): health in ``health.HealthThresholds``; a root cause
in ``compare.RatioRise`` (origin errors: >= 3, >= 2x the baseline ratio + 3 points, Poisson
p < 1e-4) and ``compare.LatencyRise`` (self-time p95 >= 2x baseline and +20 ms, >= 10
samples; 1 s with no baseline yet); blast radius in ``blast.BlastConfig``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from collector.diagnosis.api import incidents_route
from collector.diagnosis.blast import BlastRadiusAppender
from collector.diagnosis.consumer import DIAGNOSIS_SPAN_BUDGET, TraceDiagnosis
from collector.diagnosis.health import HealthAppender
from collector.diagnosis.incidents import (
    DB_NAME,
    IncidentManager,
    IncidentsAppender,
    IncidentStore,
)
from collector.diagnosis.rootcause import RootCauseAppender, RootCauseConfig
from collector.service import CollectorConfig, CollectorService

OPTIONS = {"trace_quiet_s": 1.5, "bucket_s": 5.0, "detect_window_s": 20.0,
           "recent_window_s": 1.0, "baseline_s": 300.0,
           "incident_quiet_s": 30.0, "evaluate_interval_s": 1.0,
           "span_budget": DIAGNOSIS_SPAN_BUDGET}
# What each option counts, for error messages (the others are seconds).
UNITS = {"span_budget": "spans/s (0: no budget)"}


@dataclass
class Diagnosis:
    """What other parts (and tests) reach through ``service.parts["diagnosis"]``."""

    service: CollectorService
    traces: TraceDiagnosis
    manager: IncidentManager
    evaluate_interval_s: float

    def counters(self) -> dict[str, float]:
        """What the named limits refused or dropped, what head sampling left out, and the
        keep fraction in force, for ``/metrics`` or a status page."""
        return {**self.traces.counters(), "incidents_pruned": self.manager.store.pruned}

    def evaluate(self) -> None:
        """Run the incident lifecycle on a fresh default-window snapshot."""
        self.manager.evaluate(self.service.snapshot())

    async def run(self) -> None:
        """Evaluate every ``evaluate_interval_s`` (a background task of the service)."""
        while True:
            await asyncio.sleep(self.evaluate_interval_s)
            await asyncio.to_thread(self.evaluate)

    async def close(self) -> None:
        self.manager.store.close()


def options(config: CollectorConfig) -> dict[str, float]:
    given = config.extra.get("diagnosis", {}) or {}
    if not isinstance(given, dict):
        raise ValueError("config.extra['diagnosis'] must be a mapping of option -> value")
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown diagnosis option(s) {unknown}; valid: {sorted(OPTIONS)}")
    out = dict(OPTIONS)
    for k, v in given.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or v < 0:
            unit = UNITS.get(k, "seconds")
            raise ValueError(f"diagnosis option {k} must be a number >= 0 ({unit}), got {v!r}")
        out[k] = float(v)
    return out


def install(service: CollectorService, config: CollectorConfig) -> Diagnosis:
    opts = options(config)
    traces = TraceDiagnosis(quiet_s=opts["trace_quiet_s"], bucket_s=opts["bucket_s"],
                            retention_s=max(config.retention_s,
                                            opts["baseline_s"] + opts["detect_window_s"]
                                            + 2 * opts["bucket_s"]),
                            span_budget=opts["span_budget"])
    for port, name in _topology_ports(config.topology).items():
        traces.ports.set(port, name)

    def owner_of(name: str) -> dict[str, Any] | None:
        # Looked up lazily: ownership may be installed after us, or not at all.
        lookup = getattr(service.parts.get("ownership"), "owner_of", None)
        found = lookup(name) if callable(lookup) else None
        return found if isinstance(found, dict) else None

    store = IncidentStore(config.data_dir / DB_NAME if config.data_dir is not None else None)
    manager = IncidentManager(store, traces.versions, owner_of, opts["incident_quiet_s"],
                              now=service.clock())
    rc = RootCauseConfig(detect_window_s=opts["detect_window_s"], baseline_s=opts["baseline_s"],
                         recent_window_s=opts["recent_window_s"])
    window = config.default_window_s
    service.consumers.append(traces)
    service.appenders.extend([
        HealthAppender(traces, window, baseline_s=opts["baseline_s"],
                       detect_window_s=opts["detect_window_s"]),
        RootCauseAppender(traces, window, rc, owner_of),
        BlastRadiusAppender(traces, window, rc),
        IncidentsAppender(manager),
    ])
    part = Diagnosis(service, traces, manager, opts["evaluate_interval_s"] or 1.0)
    service.routes.append(incidents_route(manager, part.evaluate))
    service.run_in_background(part.run, part.close)
    service.parts["diagnosis"] = part
    return part


def _topology_ports(path: Path | None) -> dict[int, str]:
    """``services: {name: {port: int}}`` from the demo topology, when given; other shapes are
    the graph's business and ignored here."""
    if path is None:
        return {}
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    services = doc.get("services") if isinstance(doc, dict) else None
    out: dict[int, str] = {}
    if isinstance(services, dict):
        for name, spec in services.items():
            port = spec.get("port") if isinstance(spec, dict) else None
            if isinstance(port, int) and not isinstance(port, bool):
                out[port] = str(name)
    return out
