"""Time to detection: inject faults into the running demo and time until Conway names them.

For each trial the bench injects one fault kind (errors, latency, down) into one demo service
through the demo control API, polls ``GET /api/incidents?status=open`` until an incident that
was not open before names that service as its root cause *and* the service's team from the
catalog, prints the time, clears the fault and lets the shop settle. At the end it prints p50,
p95 and the worst time per kind and overall, and how many trials were never detected.

Against a running ``make demo`` (default URLs) or, with ``--start`` (also when nothing answers
at ``--collector``), it starts its own demo through ``scripts/demo.py`` and stops it after.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from demo_services.defaults import admin_token

ROOT = Path(__file__).resolve().parent.parent
KINDS = {
    "errors": {"error_rate": 0.5},
    "latency": {"latency_ms": 400.0},
    "down": {"down": True},
}
# Services with an owner in the demo catalog, from the edge of the shop to its depths.
SERVICES = ["payment", "cart", "currency", "product-catalog", "shipping", "fraud-detection"]


@dataclass(slots=True)
class Trial:
    service: str
    kind: str
    seconds: float | None  # None: not named within the timeout
    named_kind: str | None = None


def expected_team(collector: str, service: str) -> str | None:
    body = httpx.get(f"{collector}/api/services/{service}", timeout=5).json()
    owner = body.get("owner") or {}
    team = owner.get("team")
    return team if isinstance(team, str) else None


def open_incidents(collector: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{collector}/api/incidents", params={"status": "open"}, timeout=5)
    r.raise_for_status()
    incidents = r.json()["incidents"]
    return incidents if isinstance(incidents, list) else []


def run_trial(collector: str, admin: str, headers: dict[str, str], service: str, kind: str,
              timeout_s: float) -> Trial:
    team = expected_team(collector, service)
    # One incident per root-cause service: wait until an earlier trial's has resolved, so the
    # one this fault opens is new.
    deadline = time.monotonic() + 120
    while any((i.get("root_cause") or {}).get("service") == service
              for i in open_incidents(collector)) and time.monotonic() < deadline:
        time.sleep(1.0)
    before = {i["id"] for i in open_incidents(collector)}
    r = httpx.post(f"{admin}/faults/{service}", json=KINDS[kind], headers=headers, timeout=20)
    r.raise_for_status()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s:
            for inc in open_incidents(collector):
                rc = inc.get("root_cause") or {}
                if inc["id"] not in before and rc.get("service") == service \
                        and rc.get("team") == team:
                    return Trial(service, kind, time.monotonic() - t0, rc.get("kind"))
            time.sleep(0.1)
        return Trial(service, kind, None)
    finally:
        httpx.delete(f"{admin}/faults/{service}", headers=headers, timeout=20).raise_for_status()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def report(trials: list[Trial]) -> None:
    print(f"\n{'kind':<8} {'trials':>6} {'named':>6} {'p50 s':>7} {'p95 s':>7} {'worst s':>8}")
    for kind in [*KINDS, "all"]:
        rows = [t for t in trials if kind in ("all", t.kind)]
        if not rows:
            continue
        times = [t.seconds for t in rows if t.seconds is not None]
        if times:
            print(f"{kind:<8} {len(rows):>6} {len(times):>6} {quantile(times, 0.5):>7.2f} "
                  f"{quantile(times, 0.95):>7.2f} {max(times):>8.2f}")
        else:
            print(f"{kind:<8} {len(rows):>6} {0:>6} {'-':>7} {'-':>7} {'-':>8}")
    missed = [t for t in trials if t.seconds is None]
    wrong_kind = [t for t in trials if t.seconds is not None and t.named_kind != t.kind]
    print(f"never named: {len(missed)}  " + ", ".join(f"{t.kind}:{t.service}" for t in missed))
    print(f"named with another kind: {len(wrong_kind)}  "
          + ", ".join(f"{t.kind}:{t.service}->{t.named_kind}" for t in wrong_kind))


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collector", default="http://127.0.0.1:4318")
    p.add_argument("--admin", default="http://127.0.0.1:8100")
    p.add_argument("--token", default=admin_token(),
                   help="control API token (default: $CONWAY_ADMIN_TOKEN or make demo's)")
    p.add_argument("--services", nargs="+", default=SERVICES)
    p.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    p.add_argument("--trials", type=int, default=12, help="total trials (>= 10 for a p95)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait per trial")
    p.add_argument("--settle", type=float, default=8.0, help="seconds between trials")
    p.add_argument("--warmup", type=float, default=45.0,
                   help="seconds of normal traffic before the first trial when --start")
    p.add_argument("--start", action="store_true", help="start a demo for the bench")
    args = p.parse_args(argv)

    proc: subprocess.Popen[bytes] | None = None
    if args.start or not answers(args.collector):
        data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"conway-detect-{os.getpid()}"
        print(f"starting a demo (data in {data_dir}); warm-up {args.warmup:.0f} s", flush=True)
        args.token = args.token or "bench-detect-token"
        env = {**os.environ, "CONWAY_ADMIN_TOKEN": args.token}
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo.py"),
                                 "--data-dir", str(data_dir)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not answers(args.collector) or not answers(args.admin):
            if proc.poll() is not None or time.monotonic() > deadline:
                print("the demo did not start", file=sys.stderr)
                return 1
            time.sleep(0.5)
        time.sleep(args.warmup)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    trials: list[Trial] = []
    try:
        # Kinds rotate with a shift each round, so every service meets every kind and one
        # service's incidents of one kind are far apart: an incident still open from an
        # earlier trial never counts as a detection.
        n_s, n_k = len(args.services), len(args.kinds)
        plan = [(args.services[i % n_s], args.kinds[(i + i // n_s) % n_k])
                for i in range(args.trials)]
        for service, kind in plan:
            t = run_trial(args.collector, args.admin, headers, service, kind, args.timeout)
            shown = f"{t.seconds:.2f} s" if t.seconds is not None else "not named"
            print(f"{kind:<8} {service:<16} {shown}  (named kind: {t.named_kind})", flush=True)
            trials.append(t)
            time.sleep(args.settle)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    report(trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
