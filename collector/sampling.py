"""Head sampling: how many calls each kept span stands for, so rates and ratios stay unbiased
when a service's SDK (or a collector in front) keeps only a share of the traces.

Two sources, as in production:

- the OpenTelemetry threshold in the W3C ``tracestate`` (``ot=th:<hex>``, written by the SDK's
  and the OpenTelemetry Collector's probability samplers: "TraceState Handling" in the
  OpenTelemetry specification, https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/):
  a trace is kept when its randomness is at least the threshold ``T`` (up to 14 hex digits,
  trailing zeros left out, over 2**56), so the probability is ``(2**56 - T) / 2**56`` and the
  span stands for ``1 / probability`` calls (``th:0`` keeps everything);
- a span attribute that states the multiplier itself (Tempo's ``span_multiplier_key``), named
  by ``--span-multiplier-key`` (off by default).

The weight is a whole number of calls, rounded up or down by the trace id so that its average is
exact (10 / 3 counts 3 or 4, a third of the traces 4) and every span of a trace gets the same.
An unreadable threshold or multiplier counts the span once and is counted (``unreadable``).
Weights are capped at ``MAX_WEIGHT`` (a threshold keeping one trace in a million).
"""

from __future__ import annotations

import math

from collector.model import SpanRecord

MAX_WEIGHT = 1_000_000
_TWO_56 = float(1 << 56)
_CACHE_MAX = 1_024  # distinct tracestate strings remembered with their probability


class Sampling:
    """Weights of kept spans; one per graph (and per diagnosis)."""

    def __init__(self, multiplier_key: str | None = None) -> None:
        self.multiplier_key = multiplier_key or None
        self.unreadable = 0  # thresholds or multipliers that could not be read
        self._adjusted: dict[str, float] = {}

    def weight(self, span: SpanRecord) -> int:
        """Calls ``span`` stands for (1 when it was not sampled, or says nothing)."""
        count = 1.0
        ts = span.trace_state
        if ts:
            count = self._from_trace_state(ts)
        key = self.multiplier_key
        if key is not None:
            m = span.attributes.get(key)
            if m is not None:
                if isinstance(m, int | float) and not isinstance(m, bool) \
                        and math.isfinite(m) and m >= 1:
                    count *= m
                else:
                    self.unreadable += 1
        if count == 1.0:
            return 1
        return whole(min(count, MAX_WEIGHT), span.trace_id)

    def _from_trace_state(self, ts: str) -> float:
        got = self._adjusted.get(ts)
        if got is not None:
            return got
        count = adjusted_count(ts)
        if count is None:
            self.unreadable += 1
            count = 1.0
        if len(self._adjusted) >= _CACHE_MAX:
            self._adjusted.clear()
        self._adjusted[ts] = count
        return count


def adjusted_count(trace_state: str) -> float | None:
    """``1 / sampling probability`` from a tracestate's ``ot=th:`` entry: 1.0 when there is
    no threshold, None when it cannot be read."""
    for member in trace_state.split(","):
        key, _, value = member.strip().partition("=")
        if key != "ot":
            continue
        for field in value.split(";"):
            name, _, th = field.partition(":")
            if name != "th":
                continue
            if not 1 <= len(th) <= 14 or any(c not in "0123456789abcdef" for c in th):
                return None
            threshold = int(th.ljust(14, "0"), 16)
            probability = (_TWO_56 - threshold) / _TWO_56
            return 1.0 / probability
        return 1.0
    return 1.0


def whole(count: float, trace_id: bytes) -> int:
    """``count`` as a whole number whose average over trace ids is ``count``."""
    base = math.floor(count)
    frac = count - base
    if frac <= 0.0:
        return int(base)
    u = int.from_bytes(trace_id[:8], "big") / 2 ** 64
    return int(base) + (1 if u < frac else 0)
