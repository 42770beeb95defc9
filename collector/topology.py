"""The topology file (``--topology``): ``services: {name: {port: N, ...}}``, read once here.

The collector needs only each service's port: the scraper builds its targets from them and
the diagnosis knows which service a refused call to a port was for. The demo shop's loader
(`demo_services.topology`) reads the same file through `read_document` and checks each port
with `check_port`, and adds its routes and calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class TopologyError(ValueError):
    """The topology file is malformed; the message names the file and the entry."""


def read_document(path: Path | str) -> Any:
    """The YAML document of a topology file; `TopologyError` when unreadable or not YAML."""
    source = Path(path)
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"topology file {source} is not valid YAML: {exc}") from exc


def check_port(port: object, where: str) -> int:
    """``port`` as a TCP port number, or `TopologyError` naming ``where``."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise TopologyError(f"{where}.port must be an integer in 1..65535, got {port!r}")
    return port


def service_ports(path: Path | str) -> dict[str, int]:
    """Service name -> port, from the file's ``services:`` mapping (other keys ignored)."""
    doc = read_document(path)
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict) or not services:
        raise TopologyError(
            f"topology file {path} needs a top-level 'services:' mapping of "
            "service name -> {port: N}"
        )
    out: dict[str, int] = {}
    for name, spec in services.items():
        port = spec.get("port") if isinstance(spec, dict) else None
        out[str(name)] = check_port(port, f"topology file {path}: services.{name}")
    return out
