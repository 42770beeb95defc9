"""Re-sent trace ids: a real collector fed the same batch again and again (an exporter's retry
loop) counts its calls once, and fed the same trace ids with new spans for 25 s (a trace that
never goes quiet) finishes those traces early; all the while its RSS stays under the memory
budget (256 MB by default), with the duplicates and early finishes counted on /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_collector import (
    PB,
    Collector,
    add_span,
    edge_calls,
    graph,
    metric,
    new_id,
    request,
    wait_for_calls,
)

from collector.limits import DEFAULT_MEMORY, MIB

BUDGET = DEFAULT_MEMORY.budget_bytes
TRACES = 300
RESTAMPED_S = 25.0
POOL = 500  # trace ids re-sent with new spans, each in every request: none goes quiet
SPANS_PER_POST = 2_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """Samples the collector's RSS every 0.2 s from ``__enter__`` to ``__exit__``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    try:
        with PeakRss(c.proc.pid) as rss:
            yield c
        assert rss.peak < BUDGET, f"peak RSS {rss.peak / MIB:.0f} MiB over the budget"
    finally:
        c.stop()


def shop_body(front: str, pay: str) -> bytes:
    """``TRACES`` traces: user -> front (root), front -> pay, each with an INTERNAL span."""
    req, spans = request(front, pay)
    for _ in range(TRACES):
        t = new_id(16)
        root = add_span(spans[front], 2, t)
        client = add_span(spans[front], 3, t, root.span_id)
        server = add_span(spans[pay], 2, t, client.span_id)
        add_span(spans[pay], 1, t, server.span_id)
    return req.SerializeToString()


def test_a_replayed_batch_adds_no_calls_and_is_counted_as_duplicates(
        collector: Collector) -> None:
    url = collector.url
    front, pay = f"mem-front-{new_id(8).hex()}", f"mem-pay-{new_id(8).hex()}"
    body = shop_body(front, pay)
    pairing_dups = metric(url, "conway_pairing_duplicates_total")
    diagnosis_dups = metric(url, "conway_diagnosis_spans_duplicate_total")
    sampled_out = metric(url, "conway_diagnosis_spans_sampled_out_total")
    r = httpx.post(url + "/v1/traces", content=body, headers=PB, timeout=30)
    assert r.status_code == 200
    assert wait_for_calls(url, front, pay, TRACES) == TRACES
    assert wait_for_calls(url, "user", front, TRACES) == TRACES
    replays = 0
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:  # the retry loop: the same body, as fast as it goes
        r = httpx.post(url + "/v1/traces", content=body, headers=PB, timeout=30)
        assert r.status_code == 200
        replays += 1
    assert replays >= 5
    time.sleep(3.0)  # longer than the pairing TTL: nothing is left waiting to pair
    assert edge_calls(url, front, pay) == TRACES
    assert edge_calls(url, "user", front) == TRACES
    edges = {(e["source"], e["target"]): e for e in graph(url)["edges"]}
    assert edges[(front, pay)]["calls"] == TRACES
    assert edges[("user", front)]["calls"] == TRACES
    # Each replay re-sent 3 spans per trace that pairing reads, 4 the diagnosis assembles.
    assert metric(url, "conway_pairing_duplicates_total") - pairing_dups == 3 * TRACES * replays
    # Past its span budget (a fast replay loop on a busy host) the diagnosis head-samples
    # traces it has not seen pending: those copies are sampled out before they could be
    # recognised as re-sent. Every re-sent copy is one or the other, never analysed twice.
    dups = metric(url, "conway_diagnosis_spans_duplicate_total") - diagnosis_dups
    out = metric(url, "conway_diagnosis_spans_sampled_out_total") - sampled_out
    assert dups <= 4 * TRACES * replays <= dups + out, (dups, out, replays)


def test_trace_ids_re_sent_with_new_spans_finish_early_and_memory_stays_bounded(
        collector: Collector) -> None:
    url = collector.url
    pool = [new_id(16) for _ in range(POOL)]
    roots = [new_id(8) for _ in range(POOL)]
    service = f"mem-loop-{new_id(8).hex()}"
    early = metric(url, "conway_diagnosis_traces_finished_early_total")
    by_cause = ("conway_diagnosis_traces_finished_max_age_total",
                "conway_diagnosis_traces_finished_span_cap_total")
    before = sum(metric(url, name) for name in by_cause)
    sent = 0
    peak_pending = 0.0
    with PeakRss(collector.proc.pid) as rss:
        deadline = time.monotonic() + RESTAMPED_S
        while time.monotonic() < deadline:
            req, spans = request(service)
            for k in range(SPANS_PER_POST):
                i = k % POOL
                add_span(spans[service], 1, pool[i], roots[i])  # INTERNAL, new span id
            r = httpx.post(url + "/v1/traces", content=req.SerializeToString(), headers=PB,
                           timeout=30)
            assert r.status_code == 200
            sent += SPANS_PER_POST
            peak_pending = max(peak_pending, metric(url, "conway_diagnosis_spans_pending"))
    # Every trace id got spans in every request: none went quiet, so only their maximum age
    # or, at a higher rate, the pending-spans cap finished them (with 1,000 spans per trace
    # allowed, they would otherwise have held up to 500,000 spans).
    assert sent >= 10 * POOL
    assert metric(url, "conway_diagnosis_traces_finished_early_total") > early
    assert sum(metric(url, name) for name in by_cause) > before
    assert peak_pending <= DEFAULT_MEMORY.max_pending_spans
    assert rss.peak < BUDGET, f"peak RSS {rss.peak / MIB:.0f} MiB over the budget"
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
