"""Soak: a steady span rate through the real OTLP/HTTP endpoint of a real collector process.

Starts ``python -m collector`` on a free loopback port (with a temporary ``--data-dir``, so
checkpoints run as in production), then posts protobuf batches of client/server pairs,
database calls and root spans at ``--rate`` spans/s for ``--seconds``. Every batch has fresh
trace and span ids. Prints, every ``--every`` seconds and at the end: spans sent, accepted
(200 with no partial rejection), counted by the collector (``conway_spans_received_total``),
calls counted on edges (``traces_service_graph_request_total``) against calls sent, and the
collector's RSS (VmRSS from /proc/PID/status) at start, middle and end. Targets: zero loss,
RSS flat after warm-up.

    .venv/bin/python bench/soak.py [--rate 10000] [--seconds 600] [--batch 500] [--retention S]
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
from benchlib import SPANS_PER_TRACE, free_port, shop_batch, wait_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


class Batches:
    """Protobuf batches of whole shop traces, each with fresh ids and current timestamps."""

    def __init__(self, traces_per_batch: int, seed: int = 7) -> None:
        self.traces = traces_per_batch
        self.rng = random.Random(seed)
        self.next_id = 1

    def make(self) -> tuple[bytes, int, int]:
        first, self.next_id = self.next_id, self.next_id + self.traces
        return shop_batch(self.rng, first, self.traces, time.time_ns() - 100_000_000)


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


async def run(base: str, pid: int, rate: float, seconds: float, traces_per_batch: int,
              every: float, concurrency: int) -> tuple[Tally, list[tuple[float, int]]]:
    batches = Batches(traces_per_batch)
    spans_per_batch = traces_per_batch * SPANS_PER_TRACE
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
    a = ap.parse_args()
    traces_per_batch = max(1, a.batch // SPANS_PER_TRACE)

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "collector", "--port", str(port)]
        if not a.no_data_dir:
            cmd += ["--data-dir", tmp]
        if a.retention is not None:
            cmd += ["--retention", str(a.retention)]
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
            tally, rss = asyncio.run(run(base, proc.pid, a.rate, a.seconds, traces_per_batch,
                                         a.every, a.concurrency))
            time.sleep(3.0)  # pending halves expire (TTL 2 s) before counting
            m = metrics(base)
            rss_end = rss_kib(proc.pid)
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
    lossless = (tally.accepted_spans == tally.sent_spans == received
                and calls == tally.sent_calls)
    if not a.no_data_dir:
        print(f"checkpoints {int(m.get('conway_checkpoints_total', 0)):,} "
              f"({int(m.get('conway_checkpoint_failures_total', 0))} failed), "
              f"{int(m.get('conway_checkpoint_rows_total', 0)):,} rows written, state file "
              f"{state_kib:,} KiB")
    print(f"loss    {'none' if lossless else 'MISMATCH'}")
    return 0 if lossless else 1


if __name__ == "__main__":
    sys.exit(main())
