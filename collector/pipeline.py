"""The snapshot pipeline: a list of appenders, each adding one concern.

Order (and why): traffic first (it creates nodes and edges), then ownership (health and
diagnosis report teams), then health (it needs traffic and the scrape's ``up``), then root
cause (it reads health), then blast radius (it walks upstream from root causes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from collector.model import Snapshot


class Appender(Protocol):
    """One concern added to a snapshot. Reads its own sources; never calls another appender."""

    name: str

    def append(self, snap: Snapshot) -> None: ...


def run_pipeline(snap: Snapshot, appenders: Sequence[Appender]) -> Snapshot:
    for appender in appenders:
        appender.append(snap)
    return snap
