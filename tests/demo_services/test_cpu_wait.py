"""``process_cpu_wait_seconds_total``: the time a demo process waited for a CPU, from the
kernel's schedstat. Real processes pinned to one CPU: with a busy competitor beside it a
process waits for about half of the time it wants to run; alone it barely waits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from demo_services.telemetry import ServiceMetrics, cpu_wait_seconds

CPU = min(os.sched_getaffinity(0))
# Pinned to one CPU, burn for 1.5 s and print the CPU wait it measured meanwhile.
MEASURE = f"""
import os, time
from demo_services.telemetry import cpu_wait_seconds
os.sched_setaffinity(0, {{{CPU}}})
w0 = cpu_wait_seconds(); t0 = time.perf_counter()
while time.perf_counter() - t0 < 1.5:
    pass
print(cpu_wait_seconds() - w0)
"""
COMPETITOR = f"import os\nos.sched_setaffinity(0, {{{CPU}}})\nwhile True:\n    pass\n"


def _waited() -> float:
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                         timeout=30, check=True)
    return float(out.stdout)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or cpu_wait_seconds() is None,
                    reason="no /proc/self/task/*/schedstat on this kernel")
def test_a_process_sharing_its_cpu_waits_for_it() -> None:
    alone = _waited()
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        shared = _waited()
    finally:
        competitor.kill()
        competitor.wait(timeout=10)
    # Two runnable processes on one CPU: each waits about as long as it runs (~0.75 s of
    # 1.5 s); alone, only whatever else the machine runs on that CPU.
    assert shared > 0.4, (alone, shared)
    assert shared > alone + 0.25, (alone, shared)


def test_the_service_registry_exports_cpu_and_cpu_wait() -> None:
    text = generate_latest(ServiceMetrics("cart", "1.0.0").registry).decode()
    names = {line.split()[0] for line in text.splitlines() if line and line[0] != "#"}
    assert "process_cpu_seconds_total" in names
    if cpu_wait_seconds() is not None:
        assert "process_cpu_wait_seconds_total" in names
