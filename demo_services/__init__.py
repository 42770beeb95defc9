"""Conway's demo shop: one generic HTTP service configured by a topology file, run as one
process per service, with OpenTelemetry traces, Prometheus metrics, injectable faults, a control
API and a load generator. Entry point: ``python -m demo_services --help``."""

from __future__ import annotations

from demo_services.faults import Fault, FaultError
from demo_services.topology import Topology, TopologyError, load_topology

__all__ = ["Fault", "FaultError", "Topology", "TopologyError", "load_topology"]
