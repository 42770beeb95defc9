"""Scripted partial failures for demos: apply faults, hold them, restore the shop.

Each scenario prints every step, holds its faults for ``duration_s`` and always restores the
targets it touched — also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from demo_services.control_client import ControlClient, describe_fault

PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Step:
    target: str
    fault: dict[str, Any]
    why: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    steps: tuple[Step, ...]
    expect: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "payment-outage",
            "payment fails most charges; checkout and the frontend's checkout fail with it",
            (Step("payment", {"error_rate": 0.8}, "payment answers 500 to 80% of charges"),),
            "payment is the root cause (team payments); checkout and frontend are impacted",
        ),
        Scenario(
            "slow-database",
            "the orders PostgreSQL database under checkout gets slow",
            (Step("orders", {"latency_ms": 700}, "every INSERT into orders takes +700 ms"),),
            "checkout latency rises; the orders database is the cause, checkout's team owns it",
        ),
        Scenario(
            "bad-deploy",
            "product-catalog gets a new version that fails half its requests",
            (
                Step(
                    "product-catalog",
                    {"version": "3.1.0-rc1", "error_rate": 0.5},
                    "product-catalog now reports service.version 3.1.0-rc1 and fails 50%",
                ),
            ),
            "errors start with the version change; the frontend and recommendation are impacted",
        ),
        Scenario(
            "noisy-neighbour",
            "ad burns CPU on the machine every service shares; they all get slower together",
            (
                Step(
                    "ad",
                    {"cpu_hog": 2},
                    "ad runs 2 CPU-burning threads: a noisy neighbour on the shared host",
                ),
            ),
            "one shared-host incident, not one per service",
        ),
    )
}


class _Stop(Exception):
    pass


def run_scenario(
    name: str,
    client: ControlClient,
    duration_s: float,
    out: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run one scenario; returns the exit code (0 done, 130 interrupted)."""
    scenario = SCENARIOS[name]
    touched: list[str] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        out(f"scenario {scenario.name}: {scenario.summary}")
        client.services()
        for i, step in enumerate(scenario.steps, 1):
            out(f"step {i}: {step.why}")
            touched.append(step.target)
            state = client.fault(step.target, step.fault)
            out(f"        {step.target}: {describe_fault(state['fault'])}")
        out(f"holding for {duration_s:g} s; expect: {scenario.expect}")
        remaining = duration_s
        while remaining > 0:
            chunk = min(PROGRESS_EVERY_S, remaining)
            sleep(chunk)
            remaining -= chunk
            if remaining > 0:
                out(f"        {remaining:g} s left")
    except (KeyboardInterrupt, _Stop):
        interrupted = True
        out("interrupted")
    finally:
        signal.signal(signal.SIGTERM, previous)
        for target in dict.fromkeys(touched):
            out(f"restore: clearing the fault on {target}")
            client.clear(target)
        if touched:
            out("the shop is restored")
    return 130 if interrupted else 0
