"""What changed: the ``service.version`` values each service reported, with first/last seen.

Bounded: ``MAX_SERVICES`` services and ``MAX_VERSIONS`` per service (the least recently seen
version is forgotten first); drops are counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from collector.model import SpanRecord

MAX_SERVICES = 2_000
MAX_VERSIONS = 20
CHANGE_HORIZON_S = 3_600.0


class VersionTracker:
    def __init__(self, max_services: int = MAX_SERVICES, max_versions: int = MAX_VERSIONS) -> None:
        self.max_services = max_services
        self.max_versions = max_versions
        # service -> version -> [first_seen, last_seen]
        self._seen: dict[str, dict[str, list[float]]] = {}
        self.dropped = 0

    def observe(self, spans: Iterable[SpanRecord], now: float) -> None:
        # Spans of one resource share one dict: skip repeats (compared without building keys,
        # this runs for every span).
        last_resource: object = None
        last_service: str | None = None
        for s in spans:
            if s.resource is last_resource and s.service == last_service:
                continue
            last_resource, last_service = s.resource, s.service
            v = s.resource.get("service.version")
            if v is None or v == "":
                continue
            self.note(s.service, str(v), now)

    def note(self, service: str, version: str, now: float) -> None:
        versions = self._seen.get(service)
        if versions is None:
            if len(self._seen) >= self.max_services:
                self.dropped += 1
                return
            versions = self._seen[service] = {}
        seen = versions.get(version)
        if seen is None:
            if len(versions) >= self.max_versions:
                stale = min(versions, key=lambda k: versions[k][1])
                del versions[stale]
                self.dropped += 1
            versions[version] = [now, now]
        elif now > seen[1]:
            seen[1] = now

    def versions(self, service: str) -> list[dict[str, Any]]:
        seen = self._seen.get(service, {})
        return [{"version": v, "first_seen": f, "last_seen": la}
                for v, (f, la) in sorted(seen.items(), key=lambda kv: kv[1][0])]

    def change_near(self, service: str, t: float,
                    horizon_s: float = CHANGE_HORIZON_S) -> dict[str, Any] | None:
        """The version change of ``service`` nearest ``t`` (within ``horizon_s``), or None.

        A change is a version first seen after another one was already known."""
        ordered = self.versions(service)
        best: dict[str, Any] | None = None
        for prev, cur in zip(ordered, ordered[1:], strict=False):
            at = cur["first_seen"]
            if abs(at - t) > horizon_s:
                continue
            if best is None or abs(at - t) < abs(best["at"] - t):
                best = {"service": service, "from": prev["version"], "to": cur["version"],
                        "at": at}
        return best
