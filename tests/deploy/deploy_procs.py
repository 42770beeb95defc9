"""Real child processes for the deploy tests (collectors, Prometheus), on free loopback ports,
stopped by PID and waited for."""

from __future__ import annotations

import sys
from pathlib import Path

from procs import Proc as Proc

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "catalog" / "catalog-info.yaml"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")
PYTHON = sys.executable



