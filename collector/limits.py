"""The collector's named input limits, the reasons it refuses things, and the time screen.

Every refusal has a reason from `SpanReason` (one span) or `RequestReason` (a whole request);
both are counted on ``/metrics`` with a ``reason`` label, never silent. The policy for
oversized spans is to keep the span and trim it: string values longer than
``max_value_chars`` are truncated, attributes beyond ``max_attributes`` per span (or per
resource, array or kvlist) are dropped, and both are counted. What cannot be trimmed without
changing the graph is rejected instead: a service name longer than ``max_service_chars`` (it
is a node's identity) and a span whose start or end lies more than ``time_window_s`` from the
collector's clock (a broken clock, a replay, or junk).
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.model import DecodeResult, SpanRecord

# OpenTelemetry SDKs' own default attribute count limit; Conway reads a handful of attributes.
MAX_ATTRIBUTES = 128
# Longer string (and bytes) attribute values, span names and status messages are truncated.
MAX_VALUE_CHARS = 4096
# A longer service.name rejects that resource's spans: truncating would merge distinct nodes.
MAX_SERVICE_CHARS = 256
# Spans starting or ending further than this from the collector clock are rejected: the default
# of ``python -m collector --span-time-window``. Replaying recorded traces over HTTP needs
# ``--span-time-window 0`` (off). A collector built in-process (tests, simulations with an
# injected clock, reference-trace replay) has the check off unless its config sets it.
TIME_WINDOW_S = 86_400.0


class SpanReason:
    """Why one span was refused (label values of ``conway_spans_rejected_by_reason_total``)."""

    INVALID_ID = "invalid_id"
    END_BEFORE_START = "end_before_start"
    OUT_OF_TIME_WINDOW = "timestamp_out_of_window"
    TOO_DEEP = "value_too_deep"
    SERVICE_NAME_TOO_LONG = "service_name_too_long"
    INVALID_FIELD = "invalid_field"


class RequestReason:
    """Why a whole request was refused (``conway_requests_rejected_total{reason}``)."""

    MALFORMED = "malformed"
    TOO_LARGE = "body_too_large"
    MEDIA_TYPE = "unsupported_media_type"
    ENCODING = "unsupported_encoding"
    UNAUTHORIZED = "unauthorized"
    OVERLOADED = "overloaded"
    BODY_TIMEOUT = "body_timeout"
    DISCONNECTED = "client_disconnected"
    ALL_SPANS_REJECTED = "all_spans_rejected"


@dataclass(frozen=True, slots=True)
class SpanLimits:
    """Per-span caps applied by the decoders; ``time_window_s`` by the receiver (0 = off, the
    in-process default; the command line's default is `TIME_WINDOW_S`)."""

    max_attributes: int = MAX_ATTRIBUTES
    max_value_chars: int = MAX_VALUE_CHARS
    max_service_chars: int = MAX_SERVICE_CHARS
    time_window_s: float = 0.0


DEFAULT_LIMITS = SpanLimits()


def count_reason(result: DecodeResult, reason: str, n: int = 1) -> None:
    result.reasons[reason] = result.reasons.get(reason, 0) + n


def screen_times(result: DecodeResult, now: float, window_s: float, max_errors: int) -> None:
    """Reject (in place) spans starting or ending more than ``window_s`` from ``now``."""
    if window_s <= 0 or not result.spans:
        return
    lo = int((now - window_s) * 1e9)
    hi = int((now + window_s) * 1e9)
    kept: list[SpanRecord] = []
    for span in result.spans:
        if lo <= span.start_ns <= hi and lo <= span.end_ns <= hi:
            kept.append(span)
        else:
            result.rejected += 1
            count_reason(result, SpanReason.OUT_OF_TIME_WINDOW)
            if len(result.errors) < max_errors:
                result.errors.append(
                    f"span {span.span_id.hex()} of {span.service!r:.80}: start "
                    f"{span.start_ns / 1e9:.0f} / end {span.end_ns / 1e9:.0f} (epoch s) is more "
                    f"than {window_s:g} s from the collector clock ({now:.0f}); fix the "
                    f"sender's clock"
                )
    if len(kept) != len(result.spans):
        result.spans = kept
