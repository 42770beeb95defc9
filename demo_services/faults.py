"""Injectable faults: what one service or virtual dependency is told to do wrong.

A fault is plain data. Updates arrive as JSON objects whose keys are all optional; a key that is
present replaces the field, a key that is absent keeps it (so ``--error-rate`` then
``--latency-ms`` accumulate). ``parse_update`` checks a JSON body and says what was wrong,
``apply_update`` merges it. A ``version`` on a service is a bad deploy: the service reports the
new ``service.version`` and, unless the update gives ``error_rate`` itself, fails
``BAD_DEPLOY_ERROR_RATE`` of its requests. ``cpu_hog`` (services only) is a noisy neighbour:
that many threads burning CPU in the service's process (``demo_services.cpuhog``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

BAD_DEPLOY_ERROR_RATE = 0.5
# Bounded so a typo cannot park a request for an hour; far above every call timeout anyway.
MAX_LATENCY_MS = 60_000.0
MAX_VERSION_CHARS = 64
# Burner threads of a noisy neighbour; a handful saturates any laptop, more only hurts.
MAX_CPU_HOG = 4
FIELDS = ("error_rate", "latency_ms", "down", "version", "cpu_hog")


class FaultError(ValueError):
    """A fault update that cannot be applied; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class Fault:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    down: bool = False
    version: str | None = None
    cpu_hog: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "down": self.down,
            "version": self.version,
            "cpu_hog": self.cpu_hog,
        }

    @property
    def is_clear(self) -> bool:
        return self == Fault()


def parse_update(body: object, *, virtual: bool = False) -> dict[str, Any]:
    """Validate a JSON fault update; raises FaultError naming the bad key and the valid range."""
    if not isinstance(body, dict):
        raise FaultError(
            'the body must be a JSON object such as {"error_rate": 0.5, "latency_ms": 200}'
        )
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise FaultError(f"unknown fault field(s) {unknown}; valid fields: {list(FIELDS)}")
    update: dict[str, Any] = {}
    if "error_rate" in body:
        rate = body["error_rate"]
        if not _is_number(rate) or not 0.0 <= float(rate) <= 1.0:
            raise FaultError(f"error_rate must be a number between 0 and 1, got {rate!r}")
        update["error_rate"] = float(rate)
    if "latency_ms" in body:
        latency = body["latency_ms"]
        if not _is_number(latency) or not 0.0 <= float(latency) <= MAX_LATENCY_MS:
            raise FaultError(
                f"latency_ms must be a number between 0 and {MAX_LATENCY_MS:g}, got {latency!r}"
            )
        update["latency_ms"] = float(latency)
    if "down" in body:
        if not isinstance(body["down"], bool):
            raise FaultError(f"down must be true or false, got {body['down']!r}")
        update["down"] = body["down"]
    if "version" in body:
        version = body["version"]
        if virtual and version is not None:
            raise FaultError("version applies to services only, not to a virtual dependency")
        if version is not None and (
            not isinstance(version, str) or not version.strip() or len(version) > MAX_VERSION_CHARS
        ):
            raise FaultError(
                f"version must be a non-empty string of at most {MAX_VERSION_CHARS} characters"
                f" (or null to roll back), got {version!r}"
            )
        update["version"] = version.strip() if isinstance(version, str) else None
    if "cpu_hog" in body:
        threads = body["cpu_hog"]
        # 0 is accepted everywhere: it is how a clear reaches a virtual dependency's callers.
        if virtual and threads != 0:
            raise FaultError("cpu_hog applies to services only, not to a virtual dependency")
        if (
            not isinstance(threads, int)
            or isinstance(threads, bool)
            or not 0 <= threads <= MAX_CPU_HOG
        ):
            raise FaultError(
                f"cpu_hog must be a whole number of CPU-burning threads between 0 (off) and "
                f"{MAX_CPU_HOG}, got {threads!r}"
            )
        update["cpu_hog"] = threads
    return update


def apply_update(fault: Fault, update: dict[str, Any]) -> Fault:
    """Merge a validated update into a fault (see the module docstring for bad deploys)."""
    merged = replace(fault, **update)
    if update.get("version") is not None and "error_rate" not in update and merged.error_rate == 0:
        merged = replace(merged, error_rate=BAD_DEPLOY_ERROR_RATE)
    return merged


def fault_from_json(body: object, *, virtual: bool = False) -> Fault:
    """A complete fault from its JSON form (absent keys take their defaults)."""
    return replace(Fault(), **parse_update(body, virtual=virtual))


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


# A fault's first requests are kept per episode: events of one target closer together than this
# are one episode; a longer pause (a clear, then the next fault) starts a new one.
EPISODE_GAP_S = 10.0
EVIDENCE_KEEP = 5


class FaultEvidence:
    """When the faults showed in this process, by the wall clock: per target, the episode's
    first ``EVIDENCE_KEEP`` requests the fault failed, slowed or refused, and how many there
    were. Read by ``bench/campaign.py`` (``GET /admin/faults``) to tell the time the demo's
    own traffic took to show a fault apart from the collector's time to name it; it is what
    the demo did, not what any analysis of its telemetry concluded. Bounded: one small record
    per target this process serves or calls."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._episodes: dict[str, dict[str, Any]] = {}

    def record(self, target: str) -> None:
        now = self.clock()
        ep = self._episodes.get(target)
        if ep is None or now - ep["last"] > EPISODE_GAP_S:
            ep = self._episodes[target] = {"first": [], "count": 0, "last": now}
        ep["last"] = now
        ep["count"] += 1
        if len(ep["first"]) < EVIDENCE_KEEP:
            ep["first"].append(now)

    def to_json(self) -> dict[str, Any]:
        return {t: {"first": list(ep["first"]), "count": ep["count"], "last": ep["last"]}
                for t, ep in self._episodes.items()}
