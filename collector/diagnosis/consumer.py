"""The diagnosis span consumer: every decoded span goes to the trace assembler, the port map
and the version tracker; finished traces land in the per-service bucket ring."""

from __future__ import annotations

from collections.abc import Sequence

from collector.diagnosis.traces import (
    MAX_SPANS_PER_TRACE,
    MAX_TRACES,
    QUIET_S,
    PortMap,
    TraceAssembler,
    analyze,
)
from collector.diagnosis.versions import VersionTracker
from collector.diagnosis.window import BUCKET_S, RETENTION_S, ServiceWindows
from collector.model import SpanKind, SpanRecord

_SERVER, _CONSUMER = int(SpanKind.SERVER), int(SpanKind.CONSUMER)


class TraceDiagnosis:
    """A ``SpanConsumer``. ``flush(now)`` finishes due traces (appenders call it first)."""

    def __init__(self, quiet_s: float = QUIET_S, bucket_s: float = BUCKET_S,
                 retention_s: float = RETENTION_S, max_traces: int = MAX_TRACES,
                 max_spans_per_trace: int = MAX_SPANS_PER_TRACE) -> None:
        self.ports = PortMap()
        self.versions = VersionTracker()
        self.windows = ServiceWindows(bucket_s, retention_s)
        self.assembler = TraceAssembler(self._on_trace, quiet_s, max_traces, max_spans_per_trace)
        self.spans_seen = 0

    def consume(self, spans: Sequence[SpanRecord], now: float) -> None:
        self.spans_seen += len(spans)
        learn = self.ports.learn
        for s in spans:
            if s.kind == _SERVER or s.kind == _CONSUMER:  # the only spans `learn` reads
                learn(s)
        self.versions.observe(spans, now)
        self.assembler.add(spans, now)

    def flush(self, now: float) -> None:
        self.assembler.flush(now)

    def _on_trace(self, spans: list[SpanRecord], first_seen: float) -> None:
        self.windows.record(analyze(spans, self.ports), first_seen)

    def counters(self) -> dict[str, int]:
        a = self.assembler
        return {"spans_seen": self.spans_seen, "traces_pending": len(a),
                "traces_finished": a.traces_finished,
                "traces_finished_early": a.traces_finished_early,
                "spans_dropped_trace_full": a.spans_dropped_trace_full,
                "services_dropped": self.windows.dropped_services,
                "ports_dropped": self.ports.dropped, "versions_dropped": self.versions.dropped}
