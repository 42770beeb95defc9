"""The diagnosis' result: one immutable ``Assessment`` per evaluation tick.

Every stateful step of the diagnosis (finishing traces, baselines and their marks, health
hysteresis, root causes, blast radius, shared hosts, the incident lifecycle and its writes)
runs once per tick in ``Diagnosis.evaluate``; what it concluded is published as an
``Assessment`` and every read (``/api/graph``, ``/api/incidents``, ``/api/teams…``,
``/metrics``) only looks at the latest one. A read therefore never changes what the next
tick concludes, however many readers there are.

The records here are typed and frozen: a ``RootCause`` names where a failure starts and the
``Impact`` it has on each service upstream; the JSON the API serves is their ``to_json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Root-cause kinds, most severe first: an incident whose root cause shows several keeps the
# most severe. ``shared-host``: one host slowing many services (a common cause).
DOWN, ERRORS, SHARED_HOST, LATENCY = "down", "errors", "shared-host", "latency"
KIND_SEVERITY = {DOWN: 0, ERRORS: 1, SHARED_HOST: 2, LATENCY: 3}

# How an impacted service was found: its own traces show the root cause's origin spans below
# its failed (or slowed) requests, or (no such traces) its failures or latency rose.
BY_TRACES, BY_RISE = "traces", "rise"


@dataclass(frozen=True, slots=True)
class Impact:
    """One service hurt by a root cause, with the evidence a person can check: of its
    ``requests`` in the window, ``affected`` failed (or were slow, for a latency root cause)
    and ``explained`` of those had the root cause's origin span below them in the same trace
    (``trace_ids`` are examples)."""

    service: str
    team: str | None
    how: str
    requests: int
    affected: int
    explained: int
    trace_ids: tuple[str, ...]
    summary: str

    @property
    def share(self) -> float | None:
        """The share of the affected requests the root cause explains (None: none affected)."""
        return round(min(1.0, self.explained / self.affected), 3) if self.affected else None

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "team": self.team, "how": self.how,
                "requests": self.requests, "affected": self.affected,
                "explained": self.explained, "share": self.share,
                "trace_ids": list(self.trace_ids), "summary": self.summary}


@dataclass(frozen=True, slots=True)
class RootCause:
    """Where a failure starts. ``service`` is a service, a virtual node (database, external
    API), or for ``kind == "shared-host"`` the host (then ``evidence["services"]`` names the
    services it slowed). ``evidence`` is plain JSON: ``summary``, ``trace_ids``, ``counts``,
    ``before``, ``after`` (and ``window`` = "recent" when found in the last few seconds)."""

    service: str
    kind: str
    team: str | None
    virtual: bool
    confidence: float
    evidence: Mapping[str, Any]
    impacted: tuple[Impact, ...] = ()
    host: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"service": self.service, "kind": self.kind, "team": self.team,
               "virtual": self.virtual, "confidence": self.confidence,
               "evidence": dict(self.evidence),
               "impacted": [i.to_json() for i in self.impacted]}
        if self.host is not None:
            out["host"] = self.host
        return out


@dataclass(frozen=True, slots=True)
class HeldBack:
    """A candidate the root-cause step found that this tick did not page, and why (a busy
    host's shared slowdown, a thin baseline, ...): what a person asks when a fault they see
    has no incident."""

    service: str
    kind: str
    reason: str
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "kind": self.kind, "reason": self.reason,
                "summary": self.summary}


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one evaluation tick concluded, at ``at`` (collector clock) over the default
    window. ``seq`` counts ticks (0: none yet). ``incidents`` are the open incidents as the
    API serves them."""

    at: float = 0.0
    seq: int = 0
    node_health: Mapping[str, str] = field(default_factory=dict)
    edge_health: Mapping[tuple[str, str], str] = field(default_factory=dict)
    root_causes: tuple[RootCause, ...] = ()
    impacted_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    incidents: tuple[Mapping[str, Any], ...] = ()
    held_back: tuple[HeldBack, ...] = ()
