"""Reads vs ingest: does reading the collector's API stall span ingest on a large graph?

Reads used to run the whole diagnosis pipeline under the service lock that ingest needs too:
with 5,000 nodes, four parallel ``/api/graph`` readers raised the median ingest POST from 3 ms
to 2.5 s, and one 28.9 MB ``/metrics`` took 2.3 s and held ``/healthz`` for 1.7 s. The
collector now evaluates on a clock and readers share a cached snapshot
(``CollectorService.cached`` / ``read_snapshot``). This bench measures what a busy dashboard,
Prometheus and curious people cost ingest now.

It starts a real ``python -m collector`` on a free loopback port (no ingest token, node and
edge caps set so the graph fits) and warms it up with traces whose CLIENT/SERVER spans pair
``svc-i -> svc-(7i+3)`` over ``--nodes`` service names: ``--nodes`` services plus ``user``,
twice as many edges (``user -> svc-i`` and the pairs), about 29 MB of ``/metrics`` at 5,000.
Then it runs phases of ``--phase-s`` seconds each:

1. no readers: one sender POSTs OTLP protobuf batches (``--batch`` spans, ``--rate`` POSTs/s,
   fresh trace ids and current timestamps, cycling over every service so all stay in the
   window) while a prober GETs ``/healthz`` every 100 ms: the bare baseline;
2. the same plus ``--readers`` threads looping GET on each of ``/api/graph``,
   ``/api/incidents``, ``/api/teams``, ``/api/teammap``, ``/api/services/svc-1``, ``/metrics``;
3. (unless ``--no-split``) readers of ``/metrics`` only, then of ``/api/graph`` only, to say
   which endpoint costs what.

The readers run in a separate process (threads there), so their HTTP parsing does not hold
the measuring process' GIL and inflate the latencies it measures. Per phase it prints the
ingest POST latency (median / p95 / max, POSTs done of those paced), ``/healthz`` latency,
reads completed per endpoint and their latency, and CPU use (collector, readers' process,
from ``/proc/PID/stat``), then the targets beside the figures: with readers of every
endpoint, the POST median under 50 ms and ``/healthz`` under 100 ms. Printed, never asserted.
The machine is shared: the load average is printed too, read the figures with it.

    .venv/bin/python bench/reads.py [--nodes 5000] [--phase-s 20] [--readers 4] [--rate 20]
                                    [--batch 200] [--drain-s 30] [--no-split]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.process
import multiprocessing.queues
import multiprocessing.synchronize
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from benchlib import free_port, stop, wait_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
READ_PATHS = ("/api/graph", "/api/incidents", "/api/teams", "/api/teammap",
              "/api/services/svc-1", "/metrics")
SPANS_PER_TRACE = 4  # root SERVER, a CLIENT/SERVER pair, an INTERNAL span in the callee
PROBE_EVERY_S = 0.1
READ_TIMEOUT_S = 120.0
POST_TARGET_MS = 50.0
HEALTHZ_TARGET_MS = 100.0
PROTOBUF = {"Content-Type": "application/x-protobuf"}

# One read: (path, start, end, HTTP status or 0, body bytes, error class or "").
# time.monotonic() is CLOCK_MONOTONIC, shared by every process of the machine.
ReadRow = tuple[str, float, float, int, int, str]


# -- traffic -------------------------------------------------------------------------------------

def service(i: int) -> str:
    return f"svc-{i}"


def callee(i: int, n: int) -> int:
    """The service ``svc-i`` calls: a scattered one, never itself."""
    j = (7 * i + 3) % n
    return (i + 1) % n if j == i else j


def mesh_batch(rng: random.Random, first: int, traces: int, nodes: int, run_id: int,
               now_ns: int) -> bytes:
    """An OTLP protobuf body of ``traces`` traces numbered from ``first``: trace ``k`` is a
    root SERVER span of ``svc-i`` (``i = k mod nodes``) calling `callee` (CLIENT + SERVER
    halves, 1 % failing on both) whose SERVER span has an INTERNAL child. Trace ids are
    ``run_id`` + ``k``, so every trace is new; spans end a few milliseconds before ``now_ns``."""
    req = ExportTraceServiceRequest()
    scopes: dict[str, Any] = {}

    def spans_of(name: str) -> Any:
        got = scopes.get(name)
        if got is None:
            rs = req.resource_spans.add()
            for key, value in (("service.name", name), ("service.version", "1.0.0"),
                               ("telemetry.sdk.language", "python")):
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = key, value
            got = scopes[name] = rs.scope_spans.add().spans
        return got

    for k in range(first, first + traces):
        i = k % nodes
        caller, server = service(i), service(callee(i, nodes))
        trace_id = run_id.to_bytes(8, "big") + k.to_bytes(8, "big")
        end = now_ns - 2_000_000
        start = end - 60_000_000
        dur = int(rng.lognormvariate(16.5, 0.4))  # ~15 ms
        failed = rng.random() < 0.01
        root = spans_of(caller).add()
        root.trace_id, root.span_id, root.name = trace_id, (k * 4 + 1).to_bytes(8, "big"), "GET /"
        root.kind = Span.SPAN_KIND_SERVER
        root.start_time_unix_nano, root.end_time_unix_nano = start, end
        c = spans_of(caller).add()
        c.trace_id, c.span_id, c.parent_span_id = (
            trace_id, (k * 4 + 2).to_bytes(8, "big"), root.span_id)
        c.name, c.kind = f"GET {server}", Span.SPAN_KIND_CLIENT
        c.start_time_unix_nano, c.end_time_unix_nano = start + 1_000_000, start + dur
        a = c.attributes.add()
        a.key, a.value.string_value = "http.request.method", "GET"
        a = c.attributes.add()
        a.key, a.value.int_value = "http.response.status_code", 500 if failed else 200
        s = spans_of(server).add()
        s.trace_id, s.span_id, s.parent_span_id = (
            trace_id, (k * 4 + 3).to_bytes(8, "big"), c.span_id)
        s.name, s.kind = "GET /", Span.SPAN_KIND_SERVER
        s.start_time_unix_nano = start + 1_500_000
        s.end_time_unix_nano = start + dur - 500_000
        if failed:
            c.status.code = s.status.code = 2  # STATUS_CODE_ERROR
        internal = spans_of(server).add()
        internal.trace_id, internal.parent_span_id = trace_id, s.span_id
        internal.span_id, internal.name = (k * 4 + 4).to_bytes(8, "big"), "render"
        internal.kind = Span.SPAN_KIND_INTERNAL
        internal.start_time_unix_nano = start + 2_000_000
        internal.end_time_unix_nano = start + dur - 1_000_000
    body: bytes = req.SerializeToString()
    return body


class Traffic:
    """Batches cycling over every service, with fresh trace ids; one sender at a time."""

    def __init__(self, nodes: int, traces_per_batch: int) -> None:
        self.nodes = nodes
        self.traces = traces_per_batch
        self.rng = random.Random(5)
        self.run_id = random.SystemRandom().getrandbits(63) | 1
        self.next = 0

    def batch(self, traces: int | None = None) -> bytes:
        n = self.traces if traces is None else traces
        first, self.next = self.next, self.next + n
        return mesh_batch(self.rng, first, n, self.nodes, self.run_id, time.time_ns())


# -- measuring ---------------------------------------------------------------------------------

def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def paced(every_s: float, stop_at: float, prepare: Callable[[], T],
          request: Callable[[httpx.Client, T], int], out: list[tuple[float, int]]) -> None:
    """``request`` every ``every_s`` until ``stop_at`` (a late one delays the next; no
    catching up in bursts), ``prepare`` run before each wait: (latency s, status or 0) each."""
    with httpx.Client(trust_env=False, timeout=READ_TIMEOUT_S) as client:
        due = time.monotonic()
        while True:
            item = prepare()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            t = time.monotonic()
            if t >= stop_at:
                return
            try:
                status = request(client, item)
            except httpx.HTTPError:
                status = 0
            out.append((time.monotonic() - t, status))
            due = max(due + every_s, time.monotonic())


def send_loop(base: str, traffic: Traffic, rate: float, stop_at: float,
              out: list[tuple[float, int]]) -> None:
    """POST a batch ``rate`` times a second until ``stop_at``."""
    paced(1.0 / rate, stop_at, traffic.batch,
          lambda c, body: c.post(f"{base}/v1/traces", content=body,
                                 headers=PROTOBUF).status_code, out)


def probe_loop(base: str, stop_at: float, out: list[tuple[float, int]]) -> None:
    """GET /healthz every PROBE_EVERY_S until ``stop_at``."""
    paced(PROBE_EVERY_S, stop_at, lambda: None,
          lambda c, _: c.get(f"{base}/healthz").status_code, out)


def read_loop(base: str, path: str, halt: threading.Event, out: list[ReadRow],
              set_up: threading.Barrier, busy: dict[int, tuple[str, float]]) -> None:
    me = threading.get_ident()
    with httpx.Client(trust_env=False, timeout=READ_TIMEOUT_S) as client:
        set_up.wait()  # every reader has its client: the phase's clock may start
        while not halt.is_set():
            t = time.monotonic()
            busy[me] = (path, t)
            try:
                r = client.get(f"{base}{path}")
                row: ReadRow = (path, t, time.monotonic(), r.status_code, len(r.content), "")
            except httpx.HTTPError as exc:
                row = (path, t, time.monotonic(), 0, 0, type(exc).__name__)
            out.append(row)
            del busy[me]


def reader_process(base: str, paths: list[str], per_path: int, drain_s: float,
                   ready: multiprocessing.synchronize.Event,
                   done: multiprocessing.synchronize.Event,
                   results: multiprocessing.queues.Queue[list[ReadRow]]) -> None:
    """The readers' process: ``per_path`` threads per path loop GETs until ``done``; then,
    after the reads in flight end (``drain_s`` at most), every read, the unfinished ones with
    status -1 (the process then exits, closing their connections)."""
    halt = threading.Event()
    rows: list[ReadRow] = []
    busy: dict[int, tuple[str, float]] = {}
    set_up = threading.Barrier(len(paths) * per_path + 1)
    threads = [threading.Thread(target=read_loop, args=(base, p, halt, rows, set_up, busy),
                                daemon=True)
               for p in paths for _ in range(per_path)]
    for t in threads:
        t.start()
    set_up.wait()
    ready.set()
    done.wait()
    halt.set()
    deadline = time.monotonic() + drain_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    now = time.monotonic()
    unfinished: list[ReadRow] = [(path, t0, now, -1, 0, "unfinished")
                                 for path, t0 in list(busy.values())]
    results.put(list(rows) + unfinished)


@dataclass
class Phase:
    name: str
    paths: list[str]
    seconds: float = 0.0
    posts: list[tuple[float, int]] = field(default_factory=list)
    probes: list[tuple[float, int]] = field(default_factory=list)
    reads: list[ReadRow] = field(default_factory=list)
    end: float = 0.0
    collector_cpu: float = 0.0  # share of one core
    readers_cpu: float = 0.0
    load: str = ""


def run_phase(phase: Phase, base: str, pid: int, traffic: Traffic, rate: float,
              seconds: float, per_path: int, drain_s: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    readers: multiprocessing.process.BaseProcess | None = None
    done = ctx.Event()
    results: multiprocessing.queues.Queue[list[ReadRow]] = ctx.Queue()
    try:
        if phase.paths:
            ready = ctx.Event()
            readers = ctx.Process(target=reader_process, name="reads-bench-readers",
                                  args=(base, phase.paths, per_path, drain_s, ready, done,
                                        results))
            readers.start()
            if not ready.wait(60):
                raise SystemExit("the readers' process did not start within 60 s")
        t0 = time.monotonic()
        c0 = cpu_s(pid)
        r0 = cpu_s(readers.pid) if readers is not None and readers.pid else 0.0
        stop_at = t0 + seconds
        workers = [threading.Thread(target=send_loop,
                                    args=(base, traffic, rate, stop_at, phase.posts)),
                   threading.Thread(target=probe_loop, args=(base, stop_at, phase.probes))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        phase.end = time.monotonic()
        phase.seconds = phase.end - t0
        phase.collector_cpu = (cpu_s(pid) - c0) / phase.seconds
        if readers is not None and readers.pid:
            phase.readers_cpu = (cpu_s(readers.pid) - r0) / phase.seconds
        phase.load = loadavg()
        if readers is not None:
            done.set()
            phase.reads = results.get(timeout=drain_s + 30)
    finally:
        if readers is not None:
            done.set()
            readers.join(drain_s + 40)
            if readers.is_alive():
                readers.terminate()
                readers.join()
            results.close()
            results.join_thread()


# -- reporting ---------------------------------------------------------------------------------

def ms(v: float) -> str:
    return "-" if v != v else f"{v * 1000:,.1f}"


def report(phases: list[Phase], rate: float) -> None:
    print()
    print(f"{'phase':<24} {'POSTs':>9} {'POST ms p50':>11} {'p95':>8} {'max':>8} "
          f"{'healthz p50':>11} {'p95':>7} {'max':>7} {'CPU coll.':>9} {'readers':>7} "
          f"{'load':>15}")
    for p in phases:
        lat = [t for t, _ in p.posts]
        bad = sum(1 for _, s in p.posts if s != 200)
        hz = [t for t, _ in p.probes]
        hz_bad = sum(1 for _, s in p.probes if s != 200)
        posts = f"{len(p.posts)}/{round(rate * p.seconds)}"
        print(f"{p.name:<24} {posts:>9} {ms(quantile(lat, 0.5)):>11} "
              f"{ms(quantile(lat, 0.95)):>8} {ms(max(lat, default=float('nan'))):>8} "
              f"{ms(quantile(hz, 0.5)):>11} {ms(quantile(hz, 0.95)):>7} "
              f"{ms(max(hz, default=float('nan'))):>7} {p.collector_cpu:>8.0%} "
              f"{p.readers_cpu:>7.0%} {p.load:>15}")
        if bad or hz_bad:
            print(f"{'':<24} !! {bad} POSTs and {hz_bad} /healthz probes not answered 200")
    for p in phases:
        if not p.paths:
            continue
        print(f"\nreads during '{p.name}' ({p.seconds:.1f} s; a read counts when it ended "
              f"within the phase)")
        print(f"  {'endpoint':<22} {'done':>5} {'per s':>6} {'errors':>6} {'p50 ms':>9} "
              f"{'p95 ms':>9} {'max ms':>9} {'body':>9}")
        for path in p.paths:
            rows = [r for r in p.reads if r[0] == path]
            done = [r for r in rows if r[2] <= p.end]
            ok = [r for r in done if r[3] == 200]
            errors = [r for r in done if r[3] != 200]
            lat = [r[2] - r[1] for r in ok]
            late = [r[2] - r[1] for r in rows if r[1] <= p.end < r[2]]
            size = max((r[4] for r in ok), default=0)
            longest = max(lat, default=0.0)
            print(f"  {path:<22} {len(done):>5} {len(done) / p.seconds:>6.1f} "
                  f"{len(errors):>6} {ms(quantile(lat, 0.5)):>9} {ms(quantile(lat, 0.95)):>9} "
                  f"{ms(max(lat, default=float('nan'))):>9} {size / 1e3:>8,.1f}K")
            unfinished = sum(1 for r in rows if r[3] == -1)
            if late and max(late) > longest:
                print(f"  {'':<22} {len(late)} read(s) in flight at the end took longer: "
                      f"{ms(max(late))} ms" + (f", {unfinished} of them unfinished then"
                                               if unfinished else ""))
            kinds = sorted({r[5] or f"HTTP {r[3]}" for r in errors if r[3] != -1})
            if kinds:
                print(f"  {'':<22} errors: {', '.join(kinds)}")
    base = next((p for p in phases if not p.paths), None)
    full = next((p for p in phases if len(p.paths) == len(READ_PATHS)), None)
    print("\ntargets (printed, not asserted): with readers of every endpoint, ingest POST "
          f"median < {POST_TARGET_MS:g} ms and /healthz < {HEALTHZ_TARGET_MS:g} ms")
    if base is not None:
        post50 = quantile([t for t, _ in base.posts], 0.5)
        print(f"  baseline, no readers : POST median {ms(post50)} ms; /healthz median "
              f"{ms(quantile([t for t, _ in base.probes], 0.5))} ms")
    if full is not None:
        post = quantile([t for t, _ in full.posts], 0.5) * 1000
        hz = [t for t, _ in full.probes]
        hz50, hz95, hzmax = (quantile(hz, 0.5) * 1000, quantile(hz, 0.95) * 1000,
                             max(hz, default=float("nan")) * 1000)

        def verdict(v: float, target: float) -> str:
            return "met" if v < target else "MISSED"

        print(f"  {full.name:<21}: POST median {post:,.1f} ms "
              f"({verdict(post, POST_TARGET_MS)}); /healthz median {hz50:,.1f} ms "
              f"({verdict(hz50, HEALTHZ_TARGET_MS)}), p95 {hz95:,.1f} ms "
              f"({verdict(hz95, HEALTHZ_TARGET_MS)}), max {hzmax:,.1f} ms")


# -- main --------------------------------------------------------------------------------------

def warm_up(base: str, traffic: Traffic, nodes: int) -> None:
    """Traffic over every service until /api/graph lists ``nodes`` nodes; prints the graph."""
    t = time.monotonic()
    deadline = t + 120
    per_post = 200  # traces (1,000 spans) per warm-up POST
    with httpx.Client(trust_env=False, timeout=READ_TIMEOUT_S) as client:
        graph: dict[str, Any] = {}
        graph_s = 0.0
        while time.monotonic() < deadline:
            for _ in range(-(-nodes // per_post)):
                r = client.post(f"{base}/v1/traces", content=traffic.batch(per_post),
                                headers=PROTOBUF)
                if r.status_code != 200:
                    raise SystemExit(f"warm-up POST answered {r.status_code}: {r.text[:500]}")
            g0 = time.monotonic()
            r = client.get(f"{base}/api/graph")
            graph_s = time.monotonic() - g0
            graph = r.json()
            if len(graph["nodes"]) >= nodes:
                break
        else:
            raise SystemExit(f"/api/graph lists {len(graph.get('nodes', []))} nodes after 120 s "
                             f"of warm-up, not {nodes}: {graph.get('limits')}")
        m0 = time.monotonic()
        metrics = client.get(f"{base}/metrics")
        metrics_s = time.monotonic() - m0
    print(f"warm-up: {traffic.next:,} traces ({traffic.next * SPANS_PER_TRACE:,} spans) in "
          f"{time.monotonic() - t:.1f} s; /api/graph: {len(graph['nodes']):,} nodes, "
          f"{len(graph['edges']):,} edges, {len(r.content) / 1e6:.1f} MB in {graph_s:.2f} s; "
          f"/metrics: {len(metrics.content) / 1e6:.1f} MB in {metrics_s:.2f} s "
          f"(first, uncached reads)")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=5000, help="services in the graph")
    ap.add_argument("--phase-s", type=float, default=20.0, help="seconds per phase")
    ap.add_argument("--readers", type=int, default=4, help="reader threads per endpoint")
    ap.add_argument("--rate", type=float, default=20.0, help="ingest POSTs per second")
    ap.add_argument("--batch", type=int, default=200, help="spans per ingest POST")
    ap.add_argument("--drain-s", type=float, default=30.0,
                    help="after a phase, seconds its reads in flight may take to end before "
                         "their process is stopped (they count as unfinished)")
    ap.add_argument("--no-split", action="store_true",
                    help="skip the /metrics-only and /api/graph-only phases")
    a = ap.parse_args()
    if a.nodes < 3 or a.rate <= 0 or a.batch < SPANS_PER_TRACE or a.readers < 1:
        ap.error("need --nodes >= 3, --rate > 0, --batch >= 5, --readers >= 1")
    began = time.monotonic()
    traffic = Traffic(a.nodes, a.batch // SPANS_PER_TRACE)
    t = time.perf_counter()
    traffic.batch()
    build_ms = (time.perf_counter() - t) * 1000
    traffic.next = 0
    print(f"{a.nodes:,} services; ingest {a.rate:g} POSTs/s x {traffic.traces * SPANS_PER_TRACE}"
          f" spans ({a.rate * traffic.traces * SPANS_PER_TRACE:,.0f} spans/s, {build_ms:.1f} ms "
          f"to build a batch); {a.readers} readers per endpoint; {a.phase_s:g} s per phase; "
          f"{os.cpu_count()} CPUs, load average {loadavg()} (shared machine)")

    phases = [Phase("no readers", [])]
    phases.append(Phase(f"{a.readers} readers x {len(READ_PATHS)} endpoints", list(READ_PATHS)))
    if not a.no_split:
        phases.append(Phase(f"{a.readers} readers /metrics", ["/metrics"]))
        phases.append(Phase(f"{a.readers} readers /api/graph", ["/api/graph"]))

    with tempfile.TemporaryDirectory(prefix="conway-reads-") as tmp:
        log_path = Path(tmp) / "collector.log"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "CONWAY_INGEST_TOKEN"}
        with open(log_path, "wb") as log:
            collector = subprocess.Popen(
                [sys.executable, "-m", "collector", "--port", str(port),
                 "--max-nodes", str(max(10_000, 2 * a.nodes)),
                 "--max-edges", str(max(50_000, 8 * a.nodes))],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**env, "PYTHONUNBUFFERED": "1"})
        try:
            wait_http(f"{base}/healthz", collector, log=log_path)
            print(f"collector pid {collector.pid} on {base}")
            warm_up(base, traffic, a.nodes)
            for p in phases:
                print(f"phase '{p.name}' ...", flush=True)
                run_phase(p, base, collector.pid, traffic, a.rate, a.phase_s, a.readers,
                          a.drain_s)
                if collector.poll() is not None:
                    raise SystemExit(f"the collector exited with {collector.returncode}:\n"
                                     + log_path.read_text(errors="replace")[-4000:])
        finally:
            stop(collector)
        said = [line for line in log_path.read_text(errors="replace").splitlines()
                if line.strip() and "listening on" not in line]
    report(phases, a.rate)
    print(f"\n(whole run: {time.monotonic() - began:.0f} s)")
    if said:
        print(f"\ncollector log: {len(said)} more lines, the last ones:")
        for line in said[-15:]:
            print(f"  {line[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
