"""Soak: a steady span rate through the real OTLP/HTTP endpoint of a real collector process.

Starts ``python -m collector`` on a free loopback port (with a temporary ``--data-dir``, so
checkpoints run as in production), then posts protobuf batches of client/server pairs,
database calls and root spans at ``--rate`` spans/s for ``--seconds``. Every batch has fresh
trace and span ids. Prints, every ``--every`` seconds and at the end: spans sent, accepted
(200 with no partial rejection), counted by the collector (``conway_spans_received_total``),
calls counted on edges (``traces_service_graph_request_total``) against calls sent, and the
collector's RSS (VmRSS from /proc/PID/status) at start, middle and end, and its peak (VmHWM)
and final RSS against the memory budget (``--memory-budget-mb``, the collector's 256 MB by
default). Targets: zero loss, RSS flat after warm-up and under the budget.

``--replay`` re-sends the same ``--replay-traces`` traces (6,000) over and over, as an
exporter's retry loop or a replayed batch would: identical bodies, so every call is counted
once (the loss check compares with the distinct calls); with ``--replay-new-spans`` the trace
ids repeat but every round gets new span ids (a replay re-stamped, trace ids reused): traces
that never go quiet, finished at their maximum age or by the pending-spans cap.

    .venv/bin/python bench/soak.py [--rate 10000] [--seconds 600] [--batch 500] [--retention S]
        [--replay [--replay-traces 6000] [--replay-new-spans]] [--memory-budget-mb MB]
        [--services N]

``--services 2000`` spreads the traces over 2,000 services (333 shops of six), each seen two to
four times a second at 10,000 spans/s: what grows with services (the diagnosis' time windows,
a cell per service and bucket) rather than with spans. ``conway_diagnosis_window_cells`` and
the history cut to stay in the budget are printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import SERVICES, SPANS_PER_TRACE, free_port, shop_batch, wait_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from collector.limits import MEMORY_BUDGET_MB  # noqa: E402 - after the path is set


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak so far) of ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


class Batches:
    """Protobuf batches of whole shop traces, each with fresh ids and current timestamps."""

    def __init__(self, traces_per_batch: int, seed: int = 7, shops: int = 1) -> None:
        self.traces = traces_per_batch
        self.rng = random.Random(seed)
        self.next_id = 1
        self.shops = shops

    def make(self) -> tuple[bytes, int, int]:
        first, self.next_id = self.next_id, self.next_id + self.traces
        return shop_batch(self.rng, first, self.traces, time.time_ns() - 100_000_000,
                          shops=self.shops)


class Replays(Batches):
    """The same ``pool`` traces again and again, ``traces_per_batch`` a request: identical
    bodies, or (``new_spans``) the same trace ids with new span ids every round."""

    def __init__(self, traces_per_batch: int, pool: int, new_spans: bool, seed: int = 7) -> None:
        super().__init__(traces_per_batch, seed)
        self.new_spans = new_spans
        t0 = time.time_ns() - 100_000_000
        self.bodies = [shop_batch(self.rng, first, min(traces_per_batch, pool + 1 - first), t0)
                       for first in range(1, pool + 1, traces_per_batch)]
        self.distinct_calls = sum(calls for _, _, calls in self.bodies)
        self.k = 0

    def make(self) -> tuple[bytes, int, int]:
        body, spans, calls = self.bodies[self.k % len(self.bodies)]
        round_, self.k = self.k // len(self.bodies), self.k + 1
        if not self.new_spans or round_ == 0:
            return body, spans, calls
        # New span ids (and parents) for this round, the trace ids and timestamps as before.
        req = ExportTraceServiceRequest.FromString(body)
        salt = round_.to_bytes(4, "big")
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.span_id = salt + span.span_id[4:]
                    if span.parent_span_id:
                        span.parent_span_id = salt + span.parent_span_id[4:]
        return req.SerializeToString(), spans, calls


def metrics(base: str) -> dict[str, float]:
    out: dict[str, float] = {}
    text = httpx.get(f"{base}/metrics", timeout=30).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


class Tally:
    def __init__(self) -> None:
        self.sent_spans = 0
        self.sent_calls = 0
        self.accepted_spans = 0
        self.accepted_calls = 0
        self.refused: dict[int, int] = {}
        self.errors = 0
        self.behind = 0  # batches started late because the previous ones were still in flight


async def run(base: str, pid: int, rate: float, seconds: float, batches: Batches,
              every: float, concurrency: int) -> tuple[Tally, list[tuple[float, int]]]:
    spans_per_batch = batches.traces * SPANS_PER_TRACE
    interval = spans_per_batch / rate
    tally = Tally()
    rss: list[tuple[float, int]] = [(0.0, rss_kib(pid))]
    headers = {"Content-Type": "application/x-protobuf"}
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)

    async def post(client: httpx.AsyncClient, body: bytes, spans: int, calls: int) -> None:
        try:
            r = await client.post(f"{base}/v1/traces", content=body, headers=headers)
        except httpx.HTTPError:
            tally.errors += 1
            return
        finally:
            slots.release()
        if r.status_code != 200:
            tally.refused[r.status_code] = tally.refused.get(r.status_code, 0) + 1
            return
        partial = ExportTraceServiceResponse.FromString(r.content).partial_success
        if partial.rejected_spans:
            tally.refused[200] = tally.refused.get(200, 0) + partial.rejected_spans
            return
        tally.accepted_spans += spans
        tally.accepted_calls += calls

    start = time.monotonic()
    next_report = every
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        k = 0
        while True:
            due = start + k * interval
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            if elapsed >= next_report:
                rss.append((elapsed, rss_kib(pid)))
                print(f"  t={elapsed:6.0f}s sent {tally.sent_spans:>10,} accepted "
                      f"{tally.accepted_spans:>10,} refused {sum(tally.refused.values())} "
                      f"errors {tally.errors} late {tally.behind}  RSS {rss[-1][1] / 1024:7.1f} "
                      f"MiB", flush=True)
                next_report += every
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                tally.behind += 1
            body, spans, calls = batches.make()
            await slots.acquire()
            tally.sent_spans += spans
            tally.sent_calls += calls
            task = asyncio.create_task(post(client, body, spans, calls))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.gather(*tasks)
    rss.append((time.monotonic() - start, rss_kib(pid)))
    return tally, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000.0, help="spans per second")
    ap.add_argument("--seconds", type=float, default=600.0, help="how long to send")
    ap.add_argument("--batch", type=int, default=500, help="spans per request (about)")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    ap.add_argument("--no-data-dir", action="store_true", help="run without checkpoints")
    ap.add_argument("--retention", type=float, default=None, metavar="S",
                    help="the collector's --retention (default its own, 900 s): RSS grows "
                         "until the retention's buckets are filled, so a shorter one shows the "
                         "flat part sooner")
    ap.add_argument("--replay", action="store_true",
                    help="re-send the same traces over and over (an exporter's retry loop)")
    ap.add_argument("--replay-traces", type=int, default=6_000, metavar="N",
                    help="how many distinct traces --replay cycles through (default 6000)")
    ap.add_argument("--replay-new-spans", action="store_true",
                    help="with --replay: new span ids every round, the same trace ids")
    ap.add_argument("--services", type=int, default=len(SERVICES), metavar="N",
                    help=f"spread the traces over about N services ({len(SERVICES)} a shop, "
                         f"N // {len(SERVICES)} shops, every trace in the next): the memory "
                         f"that grows with services, not with spans (default one shop)")
    ap.add_argument("--memory-budget-mb", type=float, default=None, metavar="MB",
                    help=f"passed to the collector; RSS is judged against it (default the "
                         f"collector's, {MEMORY_BUDGET_MB} MB)")
    a = ap.parse_args()
    if a.replay and a.services != len(SERVICES):
        ap.error("--services spreads fresh traffic; --replay re-sends one shop's traces")
    traces_per_batch = max(1, a.batch // SPANS_PER_TRACE)
    budget_mb = a.memory_budget_mb if a.memory_budget_mb is not None else MEMORY_BUDGET_MB
    batches = (Replays(traces_per_batch, a.replay_traces, a.replay_new_spans) if a.replay
               else Batches(traces_per_batch, shops=max(1, a.services // len(SERVICES))))

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "collector", "--port", str(port)]
        if not a.no_data_dir:
            cmd += ["--data-dir", tmp]
        if a.retention is not None:
            cmd += ["--retention", str(a.retention)]
        if a.memory_budget_mb is not None:
            cmd += ["--memory-budget-mb", str(a.memory_budget_mb)]
        log = open(Path(tmp) / "collector.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_http(f"{base}/healthz", proc, log=Path(tmp) / "collector.log")
            diagnosis = httpx.get(f"{base}/api/incidents").status_code == 200
            print(f"soak: {a.rate:,.0f} spans/s for {a.seconds:g} s, batches of "
                  f"{traces_per_batch * SPANS_PER_TRACE} spans, collector pid {proc.pid}"
                  f"{'' if a.no_data_dir else ' with --data-dir (checkpoints on)'}, "
                  f"diagnosis {'on' if diagnosis else 'off'}; "
                  f"{os.cpu_count()} CPUs shared with whatever else runs", flush=True)
            if isinstance(batches, Replays):
                print(f"replay: {a.replay_traces:,} traces ({len(batches.bodies)} bodies) sent "
                      f"again and again, "
                      f"{'new span ids every round' if a.replay_new_spans else 'identical'}",
                      flush=True)
            tally, rss = asyncio.run(run(base, proc.pid, a.rate, a.seconds, batches,
                                         a.every, a.concurrency))
            time.sleep(3.0)  # pending halves expire (TTL 2 s) before counting
            m = metrics(base)
            rss_end = rss_kib(proc.pid)
            rss_peak = rss_kib(proc.pid, "VmHWM")
            state = Path(tmp) / "state.sqlite3"
            state_kib = sum(f.stat().st_size for f in Path(tmp).glob("state.sqlite3*")) // 1024 \
                if state.exists() else 0
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
    received = int(m.get("conway_spans_received_total", 0))
    calls = int(m.get("traces_service_graph_request_total", 0))
    rejected = int(m.get("conway_spans_rejected_total", 0))
    dropped = int(m.get("conway_pairing_dropped_total", 0) + m.get(
        "conway_graph_dropped_nodes_total", 0) + m.get("conway_graph_dropped_edges_total", 0))
    middle = min(rss, key=lambda p: abs(p[0] - a.seconds / 2))
    achieved = tally.sent_spans / max(rss[-1][0], 1e-9)
    print(f"spans   sent {tally.sent_spans:,}  accepted {tally.accepted_spans:,}  counted "
          f"{received:,}  (rejected {rejected:,}, refused requests {tally.refused}, "
          f"transport errors {tally.errors})")
    print(f"calls   sent {tally.sent_calls:,}  counted on edges {calls:,}  (dropped by caps "
          f"{dropped:,})")
    print(f"rate    {achieved:,.0f} spans/s achieved of {a.rate:,.0f} asked "
          f"({tally.behind} batches sent late)")
    print(f"RSS     start {rss[0][1] / 1024:.1f} MiB, middle (t={middle[0]:.0f}s) "
          f"{middle[1] / 1024:.1f} MiB, end {rss[-1][1] / 1024:.1f} MiB, after settling "
          f"{rss_end / 1024:.1f} MiB")
    within = rss_peak / 1024 < budget_mb
    print(f"budget  {budget_mb:g} MiB: peak RSS (VmHWM) {rss_peak / 1024:.1f} MiB, final "
          f"{rss_end / 1024:.1f} MiB ({'within' if within else 'OVER'})")
    w = {k: int(m.get(f"conway_diagnosis_{k}", 0)) for k in (
        "window_cells", "max_window_cells", "window_buckets_cut_total",
        "window_cells_refused_total", "services_dropped_total")}
    print(f"windows {w['window_cells']:,} cells of {w['max_window_cells']:,} allowed, "
          f"{w['window_buckets_cut_total']:,} buckets dropped before their retention, "
          f"{w['window_cells_refused_total']:,} visits refused, "
          f"{w['services_dropped_total']:,} past the service cap")
    print(f"dedup   spans dropped as re-sent: pairing "
          f"{int(m.get('conway_pairing_duplicates_total', 0)):,}, diagnosis "
          f"{int(m.get('conway_diagnosis_spans_duplicate_total', 0)):,}; traces finished "
          f"early {int(m.get('conway_diagnosis_traces_finished_early_total', 0)):,} (max age "
          f"{int(m.get('conway_diagnosis_traces_finished_max_age_total', 0)):,}, span cap "
          f"{int(m.get('conway_diagnosis_traces_finished_span_cap_total', 0)):,}), sampled "
          f"out {int(m.get('conway_diagnosis_spans_sampled_out_total', 0)):,} spans")
    # Identical replays count each call once: compare with the distinct calls sent.
    expected_calls = (batches.distinct_calls
                      if isinstance(batches, Replays) and not a.replay_new_spans
                      else tally.sent_calls)
    if expected_calls != tally.sent_calls:
        print(f"calls   distinct {expected_calls:,} (replays add none), counted {calls:,}")
    lossless = (tally.accepted_spans == tally.sent_spans == received
                and calls == expected_calls)
    if not a.no_data_dir:
        print(f"checkpoints {int(m.get('conway_checkpoints_total', 0)):,} "
              f"({int(m.get('conway_checkpoint_failures_total', 0))} failed), "
              f"{int(m.get('conway_checkpoint_rows_total', 0)):,} rows written, state file "
              f"{state_kib:,} KiB")
    print(f"loss    {'none' if lossless else 'MISMATCH'}")
    return 0 if lossless and within else 1


if __name__ == "__main__":
    sys.exit(main())
