"""Decode speed of OTLP bodies: spans/s for a 1,000-span batch (one core, this process).

Prints figures for protobuf, gzip+protobuf (decompress included) and JSON. The batch looks like
the demo's traffic: 12 services, CLIENT/SERVER pairs, 6 attributes a span, 2% errors. Protobuf
is measured with the decoder the collector uses (the compiled fast path, collector/_fastotlp.c,
unless it is not built or CONWAY_PURE_PYTHON is set) and, when that is the compiled one, again
with the pure-Python decoder for comparison.

Run: .venv/bin/python bench/decode.py [--spans N] [--seconds S]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from collector import otlp  # noqa: E402
from collector.model import Attributes, SpanKind, SpanRecord  # noqa: E402
from collector.otlp import JSON, PROTOBUF, decode_traces  # noqa: E402
from collector.replay import to_otlp_request  # noqa: E402
from collector.wire import decompress  # noqa: E402

SERVICES = ("frontend", "ad", "product-catalog", "recommendation", "checkout", "cart",
            "shipping", "quote", "payment", "currency", "email", "fraud-detection")


def make_batch(n_spans: int) -> list[SpanRecord]:
    resources: dict[str, Attributes] = {
        s: {"service.name": s, "service.namespace": "shop", "service.version": "1.4.2",
            "telemetry.sdk.language": "python"}
        for s in SERVICES
    }
    spans: list[SpanRecord] = []
    t0 = 1_760_000_000_000_000_000
    i = 0
    while len(spans) < n_spans:
        caller, callee = SERVICES[i % len(SERVICES)], SERVICES[(i * 7 + 3) % len(SERVICES)]
        trace_id = (i + 1).to_bytes(16, "big")
        client_id, server_id = (2 * i + 1).to_bytes(8, "big"), (2 * i + 2).to_bytes(8, "big")
        error = i % 50 == 0
        start = t0 + i * 1_000_000
        common: Attributes = {"http.request.method": "GET", "url.path": f"/api/{callee}",
                  "http.response.status_code": 500 if error else 200,
                  "network.protocol.version": "1.1"}
        spans.append(SpanRecord(trace_id, client_id, b"", caller, f"GET /api/{callee}",
                                int(SpanKind.CLIENT), start, start + 4_000_000, error,
                                {**common, "server.address": callee, "server.port": 8101},
                                resources[caller], "HTTP 500" if error else ""))
        spans.append(SpanRecord(trace_id, server_id, client_id, callee, f"GET /api/{callee}",
                                int(SpanKind.SERVER), start + 500_000, start + 3_500_000, error,
                                {**common, "http.route": f"/api/{callee}",
                                 "client.address": "127.0.0.1"},
                                resources[callee], "HTTP 500" if error else ""))
        i += 1
    return spans[:n_spans]


def rate(label: str, n_spans: int, seconds: float, fn: Callable[[], int]) -> None:
    if fn() != n_spans:
        raise SystemExit(f"{label}: the decoder did not return all {n_spans} spans")
    runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        runs += 1
    elapsed = time.perf_counter() - start
    print(f"{label:<28} {n_spans * runs / elapsed:>12,.0f} spans/s  "
          f"({elapsed / runs * 1e3:.2f} ms per {n_spans}-span batch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    body = to_otlp_request(make_batch(args.spans))
    gz = gzip.compress(body)
    as_json = json_format.MessageToJson(ExportTraceServiceRequest.FromString(body)).encode()
    print(f"batch: {args.spans} spans, protobuf {len(body):,} B, gzip {len(gz):,} B, "
          f"JSON {len(as_json):,} B")
    print(f"protobuf decoder: {otlp.FAST_DECODER_INFO}")
    limit = 8 * 1024 * 1024
    rate("protobuf", args.spans, args.seconds,
         lambda: len(decode_traces(body, PROTOBUF).spans))
    rate("gzip + protobuf", args.spans, args.seconds,
         lambda: len(decode_traces(decompress(gz, "gzip", limit), PROTOBUF).spans))
    if otlp.FAST_DECODER:
        fast = otlp._fast_decode
        otlp._fast_decode = None  # the pure-Python decoder, as with CONWAY_PURE_PYTHON=1
        try:
            rate("protobuf, pure Python", args.spans, args.seconds,
                 lambda: len(decode_traces(body, PROTOBUF).spans))
            rate("gzip + protobuf, pure Python", args.spans, args.seconds,
                 lambda: len(decode_traces(decompress(gz, "gzip", limit), PROTOBUF).spans))
        finally:
            otlp._fast_decode = fast
    rate("JSON (base64 ids, enum names)", args.spans, args.seconds,
         lambda: len(decode_traces(as_json, JSON).spans))


if __name__ == "__main__":
    main()
