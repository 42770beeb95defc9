"""The diagnosis span consumer: every decoded span goes to the port map and the version tracker,
and to the trace assembler unless head sampling drops it; finished traces land in the
per-service bucket ring.

Load-adaptive head sampling bounds what the diagnosis costs under load (assembling and
analysing a trace costs more than decoding it). The offered span rate is measured on the
collector clock passed in (``now``): a count of spans that decays with time constant
``RATE_TAU_S``, divided by it. While that rate is at or below ``span_budget`` (spans/s,
default ``DIAGNOSIS_SPAN_BUDGET``; 0 means no budget) every trace is analysed. Above it, only
traces whose trace-id hash falls below the keep fraction ``p = budget / rate`` enter the
assembler (``traces.keep_hash``: deterministic on the id, so every span of a kept trace is kept,
in any batch or collector replica); the others cost one hash and are counted
(``spans_sampled_out``, ``traces_sampled_out``). A kept trace is recorded with weight ``1/p``,
rounded stochastically to an integer, so the per-service counts and histograms stay unbiased
(``window``), while significance tests judge only the traces actually seen (``compare``).

When the load falls and ``p`` rises, a trace whose first spans were sampled out under the
lower ``p`` may have its later spans kept: a partial trace, as when an exporter drops spans.

Memory: the assembler's caps (pending traces, spans per trace, spans pending in all traces, span
keys remembered to drop re-sent spans) come from the process' memory budget
(``memory``, `collector.limits.MemoryLimits`; 256 MB by default), and a trace still receiving
spans ``max_open_s`` after its first is finished early (``traces.MAX_TRACE_OPEN_S``). What they
finish early or drop is counted in ``counters()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from collector.config import DIAGNOSIS_SPAN_BUDGET
from collector.diagnosis.hosts import HostMap
from collector.diagnosis.traces import MAX_TRACE_OPEN_S, QUIET_S, TraceAssembler, analyze
from collector.diagnosis.window import BUCKET_S, RETENTION_S, ServiceWindows
from collector.limits import DEFAULT_MEMORY, MemoryLimits
from collector.model import SpanRecord
from collector.ports import PortMap
from collector.sampling import Sampling
from collector.vocabulary import CONSUMER as _CONSUMER
from collector.vocabulary import SERVER as _SERVER

# The offered rate is a span count decaying with this time constant: it follows a change in
# load within about a second, and a burst of N spans at one instant reads as N spans/s.
RATE_TAU_S = 1.0



class TraceDiagnosis:
    """A ``SpanConsumer``. ``flush(now)`` finishes due traces (each evaluation calls it
    first). The assembler's caps come from ``memory`` (the process' memory budget) unless
    ``max_traces`` / ``max_spans_per_trace`` are given."""

    def __init__(self, quiet_s: float = QUIET_S, bucket_s: float = BUCKET_S,
                 retention_s: float = RETENTION_S, max_traces: int | None = None,
                 max_spans_per_trace: int | None = None,
                 span_budget: float = DIAGNOSIS_SPAN_BUDGET,
                 memory: MemoryLimits = DEFAULT_MEMORY,
                 max_open_s: float = MAX_TRACE_OPEN_S, ports: PortMap | None = None,
                 sampling: Sampling | None = None) -> None:
        if span_budget < 0:
            raise ValueError(f"diagnosis span budget must be >= 0 spans/s (0: no budget), "
                             f"got {span_budget}")
        # A shared port map (the graph's pairing learns it), else one learned here.
        self._learns_ports = ports is None
        self.ports = PortMap() if ports is None else ports
        # Head sampling upstream (the graph's weights): a kept trace stands for 1/p traces.
        self.sampling = Sampling() if sampling is None else sampling
        self.hosts = HostMap()
        self.windows = ServiceWindows(bucket_s, retention_s, max_cells=memory.window_cells)
        self.memory = memory
        self.assembler = TraceAssembler(
            self._on_trace, quiet_s,
            memory.max_traces if max_traces is None else max_traces,
            memory.max_spans_per_trace if max_spans_per_trace is None else max_spans_per_trace,
            memory.max_pending_spans, max_open_s, memory.max_seen_spans)
        self.spans_seen = 0
        self.calls_clock_skewed = 0  # calls analysed in their caller's time (`traces`)
        self.span_budget = span_budget
        self.keep_fraction = 1.0
        self._load = 0.0  # offered spans, decaying with RATE_TAU_S
        self._load_t = -math.inf

    def consume(self, spans: Sequence[SpanRecord], now: float) -> None:
        self.spans_seen += len(spans)
        if self._learns_ports:
            learn = self.ports.learn
            for s in spans:
                if s.kind == _SERVER or s.kind == _CONSUMER:  # the only spans `learn` reads
                    learn(s)
        self.hosts.learn(spans)
        self.assembler.add(spans, now, self._offer(len(spans), now))

    def _offer(self, n: int, now: float) -> float:
        """Count ``n`` spans offered at ``now``; returns the keep fraction in force."""
        dt = now - self._load_t
        if dt > 0:
            self._load *= math.exp(-dt / RATE_TAU_S)
        self._load_t = now  # also when the clock stepped back: decay from here on
        self._load += n
        rate = self._load / RATE_TAU_S
        budget = self.span_budget
        self.keep_fraction = budget / rate if budget and rate > budget else 1.0
        return self.keep_fraction

    def flush(self, now: float) -> None:
        if now > self._load_t:
            self._offer(0, now)  # an idle collector's keep fraction returns to 1
        self.assembler.flush(now)
        self.assembler.finish_whole(now)

    def _on_trace(self, spans: list[SpanRecord], first_seen: float, weight: int) -> None:
        facts = analyze(spans, self.ports)
        head = self._head_weight(spans)
        if head != 1:
            weight *= head
        if facts.skewed:
            self.calls_clock_skewed += facts.skewed
        self.windows.record(facts, first_seen, weight)

    def _head_weight(self, spans: list[SpanRecord]) -> int:
        """Traces a kept trace stands for under head sampling upstream (1: not sampled). The
        significance tests still judge the traces actually seen (`window`, `compare`)."""
        sampling = self.sampling
        key = sampling.multiplier_key
        for s in spans:
            if s.trace_state or (key is not None and key in s.attributes):
                return sampling.weight(s)
        return 1

    def counters(self) -> dict[str, float]:
        a = self.assembler
        return {"spans_seen": self.spans_seen, "traces_pending": len(a),
                "spans_pending": a.spans_pending, "max_pending_spans": a.max_pending_spans,
                "memory_budget_bytes": self.memory.budget_bytes,
                "traces_finished": a.traces_finished,
                "traces_finished_whole": a.traces_finished_whole,
                "calls_clock_skewed": self.calls_clock_skewed,
                "traces_finished_early": a.traces_finished_early,
                "traces_finished_max_age": a.traces_finished_max_age,
                "traces_finished_span_cap": a.traces_finished_span_cap,
                "spans_duplicate": a.spans_duplicate,
                "spans_dropped_trace_full": a.spans_dropped_trace_full,
                "spans_sampled_out": a.spans_sampled_out,
                "traces_sampled_out": a.traces_sampled_out,
                "keep_fraction": self.keep_fraction,
                "services_dropped": self.windows.dropped_services,
                "window_cells": self.windows.cells,
                "max_window_cells": self.windows.max_cells,
                "window_buckets_cut": self.windows.buckets_cut + self.windows.fine_buckets_cut,
                "window_cells_refused": self.windows.cells_refused,
                "ports_dropped": self.ports.dropped,
                "hosts_dropped": self.hosts.dropped}
