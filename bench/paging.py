"""Paging that cannot get through: does it cost ingest or the API anything?

The pager sends from its own task with a 5 s timeout and keeps what fails in a bounded queue
(``collector/paging.py``). This bench runs the same traffic through three collectors, one
after the other, each a real ``python -m collector`` on a free loopback port:

1. ``bare``: no pager (the baseline);
2. ``refused``: ``--alertmanager`` and ``--page-webhook`` at ports where nothing listens
   (connections refused at once);
3. ``blackhole``: ``--alertmanager`` at a server that accepts connections and never answers
   (every send waits out its timeout: the worst an unreachable Alertmanager can do).

Each gets ``--warm-s`` of healthy shop traffic (``benchlib.shop_batch``, ``--rate`` POSTs/s
of ``--batch`` traces), then ``--fault-s`` with payment failing half its calls, which opens an
incident and makes the pager send (and fail). During the fault phase a prober times the
ingest POSTs, ``GET /api/graph``, ``GET /api/incidents`` and ``/healthz`` (every 200 ms).
Printed per collector: incidents open, the pager's failed sends and queue (``/api/paging``),
and the latencies (median / p95 / max); the bare baseline is in the same run. Printed, never
asserted; the machine is shared (2 cores): the load average is printed too.

    .venv/bin/python bench/paging.py [--warm-s 25] [--fault-s 30] [--rate 10] [--batch 20]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from benchlib import free_port, shop_batch, stop, wait_http

ROOT = Path(__file__).resolve().parents[1]


class Blackhole:
    """Accepts TCP connections and never answers (nor closes them) until stopped."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while self.running:
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.running = False
        self.thread.join()
        for c in self.held:
            c.close()
        self.sock.close()


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def fmt(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (f"{statistics.median(values):7.1f} / {pct(values, 0.95):7.1f} / "
            f"{max(values):7.1f} ms ({len(values)})")


def run(name: str, extra: list[str], args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "--port", str(port), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    timings: dict[str, list[float]] = {"post": [], "graph": [], "incidents": [], "healthz": []}
    stop_probe = threading.Event()
    try:
        wait_http(url + "/healthz", proc)
        rng = random.Random(7)
        client = httpx.Client(timeout=30, trust_env=False)
        next_id = 1

        def send(seconds: float, fail: dict[str, float] | None, timed: bool) -> None:
            nonlocal next_id
            period = 1.0 / args.rate
            end = time.monotonic() + seconds
            due = time.monotonic()
            while time.monotonic() < end:
                body, _, _ = shop_batch(rng, next_id, args.batch, time.time_ns(), fail=fail)
                next_id += args.batch
                t = time.perf_counter()
                client.post(url + "/v1/traces", content=body,
                            headers={"Content-Type": "application/x-protobuf"})
                if timed:
                    timings["post"].append((time.perf_counter() - t) * 1000)
                due += period
                time.sleep(max(0.0, due - time.monotonic()))

        def probe() -> None:
            c = httpx.Client(timeout=30, trust_env=False)
            while not stop_probe.is_set():
                for key, path in (("graph", "/api/graph"), ("incidents", "/api/incidents"),
                                  ("healthz", "/healthz")):
                    t = time.perf_counter()
                    c.get(url + path)
                    timings[key].append((time.perf_counter() - t) * 1000)
                stop_probe.wait(0.2)
            c.close()

        send(args.warm_s, None, timed=False)
        prober = threading.Thread(target=probe)
        prober.start()
        send(args.fault_s, {"payment": 0.5}, timed=True)
        stop_probe.set()
        prober.join()
        incidents = client.get(url + "/api/incidents", params={"status": "open"}).json()
        paging = client.get(url + "/api/paging")
        sinks = paging.json()["sinks"] if paging.status_code == 200 else []
        client.close()
        return {"name": name, "timings": timings,
                "incidents": [i["root_cause"]["service"] for i in incidents["incidents"]],
                "sinks": sinks}
    finally:
        stop_probe.set()
        stop(proc)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warm-s", type=float, default=25.0)
    p.add_argument("--fault-s", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=10.0, help="ingest POSTs per second")
    p.add_argument("--batch", type=int, default=20, help="traces per POST")
    args = p.parse_args(argv)
    hole = Blackhole()
    refused = f"http://127.0.0.1:{free_port()}"
    try:
        runs = [
            run("bare", [], args),
            run("refused", ["--alertmanager", refused, "--page-webhook", refused + "/hook"],
                args),
            run("blackhole", ["--alertmanager", f"http://127.0.0.1:{hole.port}"], args),
        ]
    finally:
        hole.close()
    print(f"paging bench: {args.warm_s:g} s healthy then {args.fault_s:g} s with payment "
          f"failing half its calls; {args.rate:g} POSTs/s of {args.batch} traces; load "
          f"average {os.getloadavg()[0]:.2f}")
    print("latency: median / p95 / max (count)")
    for r in runs:
        t = r["timings"]
        assert isinstance(t, dict)
        print(f"\n[{r['name']}] open incidents: {r['incidents']}")
        for s in r["sinks"]:  # type: ignore[attr-defined]
            print(f"  sink {s['kind']} {s['sink']}: sent {s['sent']}, failed sends "
                  f"{s['failures']}, queued {s['queued']}, dropped {s['dropped']}, last error "
                  f"{s['last_error']}")
        for key in ("post", "graph", "incidents", "healthz"):
            print(f"  {key:10s} {fmt(t[key])}")
    print("\ntarget: the failing pagers' figures within the bare baseline's noise")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
