"""Compiled fast path for OTLP protobuf trace decoding (collector/_fastotlp.c)."""

from collections.abc import Callable
from typing import TypeVar

_R = TypeVar("_R")

# Arrays/kvlists nested this deep make `decode` return None.
MAX_NESTING: int
# Links kept per span (collector.limits.MAX_LINKS).
MAX_LINKS: int

def decode(
    body: bytes,
    span_record_type: Callable[..., _R],
    max_attributes: int,
    max_value_chars: int,
    max_service_chars: int,
) -> list[_R] | None:
    """The spans of an ``ExportTraceServiceRequest`` body as ``span_record_type`` instances,
    or None when the body needs the full Python decoder."""

def known_fields() -> dict[str, dict[int, tuple[int, bool, str | None]]]:
    """{message full name: {field number: (FieldDescriptor type, repeated, message type)}}."""
