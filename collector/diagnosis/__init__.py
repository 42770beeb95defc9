"""Diagnosis: health, root cause versus symptoms, blast radius, incidents and who to page.

Evaluation runs on a clock, reads never change state. ``Diagnosis.evaluate`` runs every
``evaluate_interval_s`` (a background task), and is the only code that moves diagnosis
state: it finishes due traces, builds a default-window snapshot from the appenders installed
before it (traffic, ownership), judges health with hysteresis, finds root causes, groups a
busy host's services into one ``shared-host`` cause (``hosts``), fills in each cause's blast
radius from the traces (``blast``), marks the fault's buckets out of future baselines, sets
the slow-visit thresholds, runs the incident lifecycle and its SQLite writes, and publishes
the result as an immutable ``Assessment``. The one appender this installs in the read
pipeline, ``AssessmentView``, copies the latest assessment onto a snapshot (health of the
default window, ``root_causes``, ``impacted_by``, ``incidents``) and judges other windows'
health statelessly; ``GET /api/incidents`` reads the incident list. Each tick also writes its
health and open incidents, as changes, to ``Diagnosis.log`` (`collector.history.HealthLog`),
which a snapshot of a past moment (``GET /api/graph?at=``) reads through ``past_assessment``.
So the same spans under the same clock give the same incidents however many readers there are.

Options come from ``config.diagnosis`` (`collector.config.DiagnosisConfig`):
``trace_quiet_s`` (1.5), ``bucket_s`` (5), ``detect_window_s`` (20), ``recent_window_s`` (1; 0
judges the detection window only), ``baseline_s`` (300), ``incident_quiet_s`` (30),
``evaluate_interval_s`` (0.25), and ``span_budget`` (20000 spans/s; 0: no budget). With them, a
fault shows as an incident a few seconds after it starts (traces finish once whole, a quarter
second after their last span, or 1.5 s after it when a call got no answer), and the incident
resolves about ``detect_window_s`` + ``incident_quiet_s`` (~50 s) after the fault is cleared.

The tick is short because every step waits for it: a trace whole now is finished, and the
fault it shows found, only at the next tick (at 1 s, a latency fault was named ~1 s later than
its traces allowed). Whatever must last to count is timed in seconds, not ticks — health's
recovery (``HealthThresholds.recover_s``), a shared host's slowdown (``HostConfig.min_s``), a
latency candidate against a thin baseline (``rootcause.THIN_CONFIRM_S``) — so a faster tick
does not page faster on a moment's noise. A large graph's tick stretches itself
(``EVALUATION_COST_FACTOR``).

Load: while the offered span rate is at or below ``span_budget`` every trace is analysed;
above it the diagnosis head-samples whole traces by trace id, keeping a fraction
``p = budget / rate`` and weighting each kept trace by ``1/p`` (see ``consumer``), so its cost
stays near the budget's while counts and ratios stay unbiased. The graph (``/api/graph``,
``/metrics`` service-graph series) still counts every span. ``counters()`` reports the spans
and traces sampled out and the keep fraction in force, with what the caps dropped; its
`DiagnosisCollector` exports every one of them (``METRICS`` names each), e.g.
``conway_diagnosis_spans_sampled_out_total``, ``conway_diagnosis_traces_sampled_out_total``
and the gauge ``conway_diagnosis_keep_fraction``.

Thresholds (defaults; see each module): health in ``health.HealthThresholds``; a root cause
in ``compare.RatioRise`` (origin errors: >= 3, >= 2x the baseline ratio + 3 points, Poisson
p < 1e-4) and ``compare.LatencyRise`` (self-time p95 >= 2x baseline and +50 ms, >= 10
samples; x10 with a short baseline of 5 samples, never with none); blast radius in
``blast.BlastConfig``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.config import CollectorConfig
from collector.diagnosis.api import diagnosis_route, incidents_routes
from collector.diagnosis.assessment import SHARED_HOST, Assessment, HeldBack, RootCause
from collector.diagnosis.blast import BlastRadius
from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.health import HealthJudge
from collector.diagnosis.hosts import SharedHosts
from collector.diagnosis.incidents import DB_NAME, IncidentManager, IncidentStore
from collector.diagnosis.rootcause import RootCauseConfig, RootCauseFinder
from collector.history import HealthLog
from collector.model import Snapshot
from collector.pipeline import Appender, run_pipeline
from collector.ports import PortMap
from collector.sampling import Sampling
from collector.service import CollectorService
from collector.stats import VersionLog
from collector.topology import TopologyError, service_ports

# An evaluation that takes long runs at most every this many times its duration.
EVALUATION_COST_FACTOR = 3.0

@dataclass
class Diagnosis:
    """What other parts (and tests) reach through ``service.parts["diagnosis"]``."""

    service: CollectorService
    traces: TraceDiagnosis
    manager: IncidentManager
    evaluate_interval_s: float
    window_s: float
    health: HealthJudge
    finder: RootCauseFinder
    hosts: SharedHosts
    blast: BlastRadius
    # The appenders that run before the diagnosis (traffic, ownership): an evaluation builds
    # its snapshot from these, never from the read pipeline that shows its own results.
    base: list[Appender]
    latest: Assessment = field(default_factory=Assessment)
    took_s: float = 0.0  # what the last evaluation took (wall clock)
    # Each tick's health and open incidents, as changes, for the graph at a past moment.
    log: HealthLog = field(default_factory=lambda: HealthLog(900.0))

    def counters(self) -> dict[str, float]:
        """What the named limits refused or dropped, what head sampling left out, and the
        keep fraction in force, for ``/metrics`` or a status page."""
        return {**self.traces.counters(), "incidents_pruned": self.manager.store.pruned,
                "evaluations": self.latest.seq, "evaluation_seconds": self.took_s,
                "evaluation_interval_seconds": self.interval()}

    def evaluate(self, now: float | None = None) -> Assessment:
        """One evaluation tick at ``now`` (default: the service clock); see the module doc."""
        service = self.service
        started = time.monotonic()
        with service.lock:
            t = service.clock() if now is None else now
            self.traces.flush(t)
            snap = run_pipeline(Snapshot(window_s=self.window_s, generated_at=t), self.base)
            built_s = time.monotonic() - started
            self.health.judge(snap, stateful=True)
            found = self.finder.find(snap)
            rc = self.finder.cfg
            newest = t - self.traces.assembler.recent_lag_s
            causes = self.hosts.group(snap, found.causes, found.window_start,
                                      (newest - rc.recent_window_s,
                                       newest - 3 * rc.recent_window_s), rc.baseline_s)
            causes = self.blast.apply(snap, causes, found.window_start)
            windows = self.traces.windows
            # Keep the fault and its victims out of their future baselines: they are compared
            # with the last healthy period, however long the fault lasts.
            marked = set(found.to_mark) & {c.service for c in causes}
            # Not a shared host's services: a host busy for good (a new neighbour) becomes
            # their normal once it fills their baseline.
            marked.update(i.service for c in causes for i in c.impacted)
            if marked:
                windows.mark(marked, found.window_start, t)
            windows.slow_ms = found.slow_ms
            self.manager.evaluate(causes, t, snap)
            impacted_by: dict[str, list[str]] = {}
            for c in causes:
                for i in c.impacted:
                    impacted_by.setdefault(i.service, []).append(c.service)
            self.latest = Assessment(
                at=t, seq=self.latest.seq + 1,
                node_health={n.id: n.health for n in snap.nodes.values()},
                edge_health={k: e.health for k, e in snap.edges.items()},
                root_causes=tuple(causes),
                impacted_by={k: tuple(v) for k, v in impacted_by.items()},
                incidents=tuple(self.manager.incidents_json("open")),
                held_back=self._held_back(causes))
            self.log.record(t, self.latest.node_health, self.latest.edge_health,
                            self.latest.incidents)
            AssessmentView(self).append(snap)
        # Readers of the default window may share this snapshot (as costly to build as
        # theirs): a large graph's reads then cost no second build under the lock.
        service.offer(("snapshot", self.window_s), snap, built_s)
        self.took_s = time.monotonic() - started
        return self.latest

    def _held_back(self, paged: list[RootCause]) -> tuple[HeldBack, ...]:
        """The candidates this tick found and did not page, with why."""
        named = {c.service for c in paged}
        named.update(s for c in paged if c.kind == SHARED_HOST
                     for s in c.evidence.get("services", ()) if isinstance(s, str))
        held = {**self.finder.held, **self.hosts.held, **self.blast.held}
        return tuple(HeldBack(name, cand.kind, why, str(cand.evidence.get("summary", "")))
                     for name, (cand, why) in sorted(held.items()) if name not in named)

    def interval(self) -> float:
        """Seconds until the next tick: ``evaluate_interval_s``, or ``EVALUATION_COST_FACTOR``
        times what the last tick took when that is longer (a graph so large that evaluating
        it takes a while holds the lock ingest needs a bounded share of the time; the cost
        is detection that much later, shown by ``conway_diagnosis_evaluation_seconds``)."""
        return max(self.evaluate_interval_s, EVALUATION_COST_FACTOR * self.took_s)

    async def run(self) -> None:
        """Evaluate every ``evaluate_interval_s`` (a background task of the service). The
        incident store's write errors never reach here (it keeps them pending); a tick that
        fails for any other reason is logged with its traceback (once, until a tick works
        again) and the loop goes on, waiting 1 s, doubling up to 60 s, while ticks fail."""
        import sys
        import traceback

        backoff, failed = 0.0, 0
        while True:
            await asyncio.sleep(max(self.interval(), backoff))
            try:
                await asyncio.to_thread(self.evaluate)
            except Exception:
                failed += 1
                backoff = min(max(2 * backoff, 1.0), 60.0)
                if failed == 1:
                    print(f"conway collector: a diagnosis evaluation failed, retrying with "
                          f"backoff:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                continue
            if failed:
                print(f"conway collector: diagnosis evaluations work again (after {failed} "
                      f"failed)", file=sys.stderr, flush=True)
            backoff, failed = 0.0, 0

    async def close(self) -> None:
        self.manager.store.close()


class AssessmentView:
    """The read pipeline's diagnosis step: shows the latest assessment on a snapshot and
    changes no state. The default window takes the health the last tick judged (with its
    hysteresis); other windows, and nodes or edges newer than that tick, are judged
    statelessly. Root causes, ``impacted_by`` and incidents are the last tick's."""

    name = "assessment"

    def __init__(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis

    def append(self, snap: Snapshot) -> None:
        if snap.historical:
            past_assessment(self.diagnosis, snap)
            return
        a = self.diagnosis.latest
        if snap.window_s == self.diagnosis.window_s:
            for node in snap.nodes.values():
                node.health = a.node_health.get(node.id, "")
            for key, edge in snap.edges.items():
                edge.health = a.edge_health.get(key, "")
            new = ({n.id for n in snap.nodes.values() if not n.health},
                   {k for k, e in snap.edges.items() if not e.health})
            if new[0] or new[1]:
                self.diagnosis.health.judge(snap, only=new)
        else:
            self.diagnosis.health.judge(snap)
        for name, roots in a.impacted_by.items():
            hit = snap.nodes.get(name)
            if hit is not None:
                hit.meta["impacted_by"] = list(roots)
        snap.meta["root_causes"] = [c.to_json() for c in a.root_causes]
        snap.meta["incidents"] = [dict(i) for i in a.incidents]


def past_assessment(diagnosis: Diagnosis, snap: Snapshot) -> None:
    """What the diagnosis concluded at a past moment (``snap.generated_at``), changing no
    state: the health each node and edge had then, from the log (for the default window;
    other windows, and moments before the log, judged statelessly from the window's
    numbers: ``health_source``), and the incidents open then (``incidents_open_at``)."""
    t = snap.generated_at
    past = diagnosis.log.health_at(t) if snap.window_s == diagnosis.window_s else None
    if past is None:
        diagnosis.health.judge(snap)
        snap.meta["health_source"] = "judged"
    else:
        for node in snap.nodes.values():
            node.health = past.nodes.get(node.id, "")
        for key, edge in snap.edges.items():
            edge.health = past.edges.get(key, "")
        new = ({n.id for n in snap.nodes.values() if not n.health},
               {k for k, e in snap.edges.items() if not e.health})
        if new[0] or new[1]:
            diagnosis.health.judge(snap, only=new)
        snap.meta["health_source"] = "log"
    incidents = incidents_open_at(diagnosis, t)
    for inc in incidents:
        root = str((inc.get("root_cause") or {}).get("service"))
        for d in inc.get("impacted") or []:
            hit = snap.nodes.get(str(d.get("service")))
            if hit is not None:
                hit.meta.setdefault("impacted_by", []).append(root)
    snap.meta["root_causes"] = [dict(inc["root_cause"]) for inc in incidents]
    snap.meta["incidents"] = incidents


def incidents_open_at(diagnosis: Diagnosis, t: float) -> list[dict[str, Any]]:
    """Incidents open at ``t`` (opened at or before it, not resolved by then), newest first,
    from the incident store (it survives restarts); each with its root cause, impacted
    services and page as the log saw them at ``t`` (``as_of: "at"``), or, before the log,
    as they are now (``as_of: "latest"``). ``status`` is as at ``t``; ``status_now`` and
    ``resolved_at`` say what became of it."""
    logged = diagnosis.log.incidents_at(t)
    out = []
    for inc in diagnosis.manager.incidents():
        if inc.started_at > t:
            continue
        if inc.status == "resolved" and (inc.resolved_at is None or inc.resolved_at <= t):
            continue
        j = inc.to_json()
        j["status_now"], j["status"] = j["status"], "open"
        j["history"] = [h for h in j["history"] if float(h.get("at", 0.0)) <= t]
        seen = logged.get(inc.id) if logged is not None else None
        if seen is not None:
            j.update(root_cause=seen["root_cause"], impacted=seen["impacted"],
                     page=seen["page"], confidence=seen["confidence"])
            j["as_of"] = "at"
        else:
            j["as_of"] = "latest"
        out.append(j)
    return out


# Each key of `Diagnosis.counters` -> (metric type, name, help) on /metrics; a key missing
# here is not exported (tests/collector/test_metrics_exposition.py fails).
METRICS: dict[str, tuple[str, str, str]] = {
    "spans_sampled_out": ("counter", "conway_diagnosis_spans_sampled_out",
                          "Spans the diagnosis left out by head sampling, above its span "
                          "budget"),
    "traces_sampled_out": ("counter", "conway_diagnosis_traces_sampled_out",
                           "Traces (root spans) the diagnosis left out by head sampling"),
    "keep_fraction": ("gauge", "conway_diagnosis_keep_fraction",
                      "Share of traces the diagnosis analyses now (1: all; below 1 above its "
                      "span budget)"),
    "spans_duplicate": ("counter", "conway_diagnosis_spans_duplicate",
                        "Spans the diagnosis dropped as re-sent (same trace and span id seen "
                        "lately)"),
    "traces_finished_early": ("counter", "conway_diagnosis_traces_finished_early",
                              "Traces finished before going quiet (trace cap, pending-spans "
                              "cap or maximum age)"),
    "traces_finished_max_age": ("counter", "conway_diagnosis_traces_finished_max_age",
                                "Traces finished at their maximum age, still receiving spans"),
    "traces_finished_span_cap": ("counter", "conway_diagnosis_traces_finished_span_cap",
                                 "Traces finished early because all pending traces held the "
                                 "most spans the memory budget allows"),
    "spans_pending": ("gauge", "conway_diagnosis_spans_pending",
                      "Spans waiting in pending traces"),
    "memory_budget_bytes": ("gauge", "conway_memory_budget_bytes",
                            "The memory budget the caps are derived from"),
    "evaluations": ("counter", "conway_diagnosis_evaluations", "Evaluation ticks run"),
    "evaluation_seconds": ("gauge", "conway_diagnosis_evaluation_seconds",
                           "What the last evaluation tick took"),
    "evaluation_interval_seconds": ("gauge", "conway_diagnosis_evaluation_interval_seconds",
                                    "Seconds between evaluation ticks now (longer than the "
                                    "configured interval when a tick takes long)"),
    "spans_seen": ("counter", "conway_diagnosis_spans_seen",
                   "Spans the diagnosis was given (before head sampling and the re-sent "
                   "check)"),
    "traces_pending": ("gauge", "conway_diagnosis_traces_pending",
                       "Traces being assembled (waiting to go quiet)"),
    "max_pending_spans": ("gauge", "conway_diagnosis_max_pending_spans",
                          "Limit of spans waiting in pending traces (from the memory budget)"),
    "traces_finished": ("counter", "conway_diagnosis_traces_finished",
                        "Traces assembled and analysed (gone quiet, whole, or finished early)"),
    "traces_finished_whole": ("counter", "conway_diagnosis_traces_finished_whole",
                              "Traces finished as soon as they were whole (a root, every "
                              "parent, every call answered), before their quiet time"),
    "spans_dropped_trace_full": ("counter", "conway_diagnosis_spans_dropped_trace_full",
                                 "Spans the diagnosis dropped because their trace already held "
                                 "the most spans per trace the memory budget allows"),
    "services_dropped": ("counter", "conway_diagnosis_services_dropped",
                         "Service visits the diagnosis did not record because it already "
                         "tracks the most services it may (window.MAX_SERVICES)"),
    "window_cells": ("gauge", "conway_diagnosis_window_cells",
                     "(service, time bucket) cells the diagnosis' windows hold"),
    "max_window_cells": ("gauge", "conway_diagnosis_max_window_cells",
                         "Limit of those cells (the memory budget's share for them)"),
    "window_buckets_cut": ("counter", "conway_diagnosis_window_buckets_cut",
                           "Time buckets the diagnosis dropped before their retention to stay "
                           "within max_window_cells (the baseline reaches less far back)"),
    "window_cells_refused": ("counter", "conway_diagnosis_window_cells_refused",
                             "Service visits not recorded in a time bucket because "
                             "max_window_cells was reached and no older bucket could go"),
    "ports_dropped": ("counter", "conway_diagnosis_ports_dropped",
                      "Server ports the diagnosis did not learn because its port map was full "
                      "(traces.MAX_PORTS)"),
    "calls_clock_skewed": ("counter", "conway_diagnosis_calls_clock_skewed",
                           "Calls whose server side lay outside its client span (the two "
                           "processes' clocks disagree): analysed in the caller's time"),
    "hosts_dropped": ("counter", "conway_diagnosis_hosts_dropped",
                      "Resources whose host the diagnosis did not record because its host map "
                      "was full (hosts.MAX_SERVICES)"),
    "incidents_pruned": ("counter", "conway_diagnosis_incidents_pruned",
                         "Resolved incidents deleted, oldest first, to keep the incident store "
                         "within its cap (incidents.MAX_INCIDENTS)"),
}


class DiagnosisCollector(Collector):
    """`Diagnosis.counters` on ``/metrics``, as ``METRICS`` names them."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis

    def collect(self) -> Iterator[Metric]:
        d = self.diagnosis.counters()
        for key, (kind, name, doc) in METRICS.items():
            if kind == "counter":
                yield CounterMetricFamily(name, doc, value=d.get(key, 0))
            else:
                yield GaugeMetricFamily(name, doc, value=d.get(key, 0))


def install(service: CollectorService, config: CollectorConfig) -> Diagnosis:
    opts = config.diagnosis
    traces = TraceDiagnosis(quiet_s=opts.trace_quiet_s, bucket_s=opts.bucket_s,
                            retention_s=max(config.retention_s,
                                            opts.baseline_s + opts.detect_window_s
                                            + 2 * opts.bucket_s),
                            span_budget=opts.span_budget, memory=config.memory,
                            ports=_ports(service), sampling=_sampling(service))
    if config.topology is not None:
        try:
            for name, port in service_ports(config.topology).items():
                traces.ports.set(port, name)
        except TopologyError:
            pass  # the scraper reports a bad topology file; ports are only a hint here

    def owner_of(name: str) -> dict[str, Any] | None:
        # Looked up lazily: ownership may be installed after us, or not at all.
        lookup = getattr(service.parts.get("ownership"), "owner_of", None)
        found = lookup(name) if callable(lookup) else None
        return found if isinstance(found, dict) else None

    def cpu_of(name: str, start: float, end: float) -> Any:
        # The scraper's CPU and CPU-wait rates (None: not scraped, or not exported).
        lookup = getattr(service.parts.get("scraper"), "cpu_use", None)
        return lookup(name, start, end) if callable(lookup) else None

    store = IncidentStore(config.data_dir / DB_NAME if config.data_dir is not None else None)
    manager = IncidentManager(store, _versions(service), owner_of, opts.incident_quiet_s,
                              now=service.clock())
    rc = RootCauseConfig(detect_window_s=opts.detect_window_s, baseline_s=opts.baseline_s,
                         recent_window_s=opts.recent_window_s)
    service.consumers.append(traces)
    part = Diagnosis(
        service, traces, manager, opts.evaluate_interval_s or 0.25,
        window_s=config.default_window_s,
        health=HealthJudge(traces, baseline_s=opts.baseline_s,
                           detect_window_s=opts.detect_window_s),
        finder=RootCauseFinder(traces, rc, owner_of),
        hosts=SharedHosts(traces.hosts, traces.windows, owner_of, cpu_of=cpu_of),
        blast=BlastRadius(traces, rc),
        base=list(service.appenders),
        log=HealthLog(config.retention_s))
    service.appenders.append(AssessmentView(part))
    def open_at(t: float) -> list[dict[str, Any]]:
        with service.lock:
            return incidents_open_at(part, t)

    service.routes.extend(incidents_routes(manager, open_at, service.clock))
    service.routes.append(diagnosis_route(lambda: part.latest))
    service.run_in_background(part.run, part.close)
    service.parts["diagnosis"] = part
    service.metrics.register(DiagnosisCollector(part))
    return part


def _versions(service: CollectorService) -> VersionLog:
    """The graph's record of the versions each service reported (one record for the graph's
    service page and the incidents' "changed before" line); its own when there is no graph."""
    versions = getattr(service.parts.get("graph"), "versions", None)
    return versions if isinstance(versions, VersionLog) else VersionLog()


def _ports(service: CollectorService) -> PortMap | None:
    """The graph's port map (its pairing learns it from server spans), so a refused call is
    drawn and blamed on the same service; None (the diagnosis learns its own) without a graph."""
    ports = getattr(getattr(service.parts.get("graph"), "pairer", None), "ports", None)
    return ports if isinstance(ports, PortMap) else None


def _sampling(service: CollectorService) -> Sampling | None:
    """The graph's head-sampling weights (one reading of thresholds and multipliers)."""
    sampling = getattr(getattr(service.parts.get("graph"), "pairer", None), "sampling", None)
    return sampling if isinstance(sampling, Sampling) else None
