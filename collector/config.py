"""The collector's configuration: one typed, validated dataclass per concern, with its defaults.

`CollectorConfig` holds the process-wide settings and one section per concern: `graph`
(`GraphConfig`), the HTTP edge (`EdgeConfig`), `diagnosis` (`DiagnosisConfig`), `paging`
(`PagingConfig`), `checkpoint` (`CheckpointConfig`) and `ownership` (`OwnershipConfig`).
Each section checks its values when built and raises `ValueError` naming the field, so a bad
value fails at start-up (``python -m collector`` turns it into a usage error). The defaults
are defined here, once; the modules that use them import them from here.

This module imports no concern (they import it), so it can be read by every part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from collector.limits import DEFAULT_LIMITS, MEMORY_BUDGET_MB, MemoryLimits, SpanLimits
from collector.pairing import PairingConfig
from collector.stats import MAX_VERSIONS_PER_SERVICE

# -- the graph -------------------------------------------------------------------------------
MAX_NODES = 10_000
MAX_EDGES = 50_000
PAIRING_TTL_S = 2.0

# -- the HTTP edge ---------------------------------------------------------------------------
# Receiver requests (OTLP + Zipkin) being read or decoded at once before answering 503.
MAX_INFLIGHT = 64
# Request bodies held in memory at once (read, waiting to be decoded, or decoding) before
# answering 503.
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
# Seconds a client has to send its whole body (a trickling client gets 408 and a closed
# connection).
BODY_TIMEOUT_S = 30.0
# Bodies decoded at once: decoding holds the GIL, so more buys no speed, only memory.
DECODE_CONCURRENCY = 2
# Connections open at once (idle ones and those with a request in progress); a new connection
# past it is answered 503 with ``Retry-After`` and closed, unless an idle one can make room.
MAX_CONNECTIONS = 1024
# Connections open at once without a request in progress (headers not complete yet, or idle
# between keep-alive requests). Past it the oldest of them is closed to make room for the new
# one, so idle or slow clients never hold the slots real requests need.
MAX_IDLE_CONNECTIONS = 512
# Seconds a connection has to send a request's complete headers, counted from connecting or,
# on a kept-alive connection, from the request's first byte; then it is closed.
HEADER_TIMEOUT_S = 5.0
# Whole seconds a kept-alive connection may stay idle (no byte sent) after a response.
KEEP_ALIVE_TIMEOUT_S = 5
MAX_BODY_BYTES = 8 * 1024 * 1024

# -- the diagnosis ---------------------------------------------------------------------------
# Spans per second analysed in full; above it, traces are head-sampled down to about this.
DIAGNOSIS_SPAN_BUDGET = 20_000.0

# -- checkpoint and ownership ----------------------------------------------------------------
CHECKPOINT_INTERVAL_S = 1.0
CATALOG_POLL_S = 1.0


def _check(section: object, *, positive: tuple[str, ...] = (),
           non_negative: tuple[str, ...] = ()) -> None:
    """`ValueError` naming the first field of ``section`` that is not a finite number in range."""
    name = type(section).__name__
    for attr in (*positive, *non_negative):
        v = getattr(section, attr)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{name}.{attr} must be a number, got {v!r}")
        if attr in positive and v <= 0:
            raise ValueError(f"{name}.{attr} must be > 0, got {v!r}")
        if attr in non_negative and v < 0:
            raise ValueError(f"{name}.{attr} must be >= 0, got {v!r}")


@dataclass(frozen=True)
class GraphConfig:
    """The traffic graph's caps and how call halves pair.

    ``pairing``: a whole `PairingConfig` (e.g. ``PairingConfig.tempo()`` to replay Tempo's
    behaviour); when None one is built from ``pairing_ttl_s``, ``pairing_max_items`` (None:
    from the memory budget) and the memory budget's remembered-span cap."""

    max_nodes: int = MAX_NODES
    max_edges: int = MAX_EDGES
    max_versions_per_service: int = MAX_VERSIONS_PER_SERVICE
    pairing_ttl_s: float = PAIRING_TTL_S
    pairing_max_items: int | None = None
    pairing: PairingConfig | None = None
    # A span attribute stating how many calls the span stands for (Tempo's
    # span_multiplier_key); None: only the tracestate's sampling threshold is read.
    span_multiplier_key: str | None = None

    def __post_init__(self) -> None:
        _check(self, positive=("max_nodes", "max_edges", "max_versions_per_service",
                               "pairing_ttl_s"))
        if self.pairing_max_items is not None:
            _check(self, positive=("pairing_max_items",))

    def pairing_config(self, memory: MemoryLimits) -> PairingConfig:
        if self.pairing is not None:
            return self.pairing
        return PairingConfig(
            ttl_s=self.pairing_ttl_s,
            max_items=(memory.pairing_max_items if self.pairing_max_items is None
                       else self.pairing_max_items),
            max_seen=memory.max_seen_spans)


@dataclass(frozen=True)
class EdgeConfig:
    """The HTTP edge: admission and body limits, the connection guard, the ingest token and
    the per-span caps of the decoders."""

    max_inflight_requests: int = MAX_INFLIGHT
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    body_timeout_s: float = BODY_TIMEOUT_S
    decode_concurrency: int = DECODE_CONCURRENCY
    max_connections: int = MAX_CONNECTIONS
    max_idle_connections: int = MAX_IDLE_CONNECTIONS
    header_timeout_s: float = HEADER_TIMEOUT_S
    keep_alive_timeout_s: int = KEEP_ALIVE_TIMEOUT_S
    # Receivers refuse requests without ``Authorization: Bearer <token>`` (None: no token).
    ingest_token: str | None = None
    span_limits: SpanLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        _check(self, positive=("max_inflight_bytes", "body_timeout_s", "decode_concurrency",
                               "max_connections", "max_idle_connections", "header_timeout_s",
                               "keep_alive_timeout_s"),
               non_negative=("max_inflight_requests",))
        if self.ingest_token is not None and not self.ingest_token:
            raise ValueError("EdgeConfig.ingest_token must not be empty (None: no token)")


@dataclass(frozen=True)
class DiagnosisConfig:
    """Root cause, blast radius and incidents: seconds, except ``span_budget`` (spans/s
    analysed in full, 0: no budget). `from_options` builds one from ``OPTION=value`` pairs
    (``--diagnosis``)."""

    trace_quiet_s: float = 1.5
    bucket_s: float = 5.0
    detect_window_s: float = 20.0
    recent_window_s: float = 1.0
    baseline_s: float = 300.0
    incident_quiet_s: float = 30.0
    evaluate_interval_s: float = 0.25
    span_budget: float = DIAGNOSIS_SPAN_BUDGET

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0:
                unit = "spans/s (0: no budget)" if f.name == "span_budget" else "seconds"
                raise ValueError(f"diagnosis option {f.name} must be a number >= 0 ({unit}), "
                                 f"got {v!r}")

    @classmethod
    def from_options(cls, given: dict[str, Any]) -> DiagnosisConfig:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"unknown diagnosis option(s) {unknown}; valid: {sorted(names)}")
        return cls(**given)


@dataclass(frozen=True)
class PagingConfig:
    """Where pages go: Alertmanager API bases (each member of an HA pair gets every alert) and
    PagerDuty-Events-shaped webhooks; ``dashboard_url`` makes links in the alerts."""

    alertmanager: tuple[str, ...] = ()
    page_webhook: tuple[str, ...] = ()
    dashboard_url: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.alertmanager or self.page_webhook)


@dataclass(frozen=True)
class CheckpointConfig:
    """With a data dir: how often the graph is checkpointed, and whether an unusable state
    file is moved aside at start-up (``--reset-state``) instead of stopping it."""

    interval_s: float = CHECKPOINT_INTERVAL_S
    reset_state: bool = False
    # The graph archived a minute at a time beyond the retention (``collector.archive``):
    # its bound on disk (0: no archive) and the age its minutes are kept to.
    archive_max_mb: float = 256.0
    archive_keep_s: float = 7 * 86_400.0
    archive_every_s: float = 60.0  # the archive's resolution: one graph per this many s

    def __post_init__(self) -> None:
        _check(self, positive=("interval_s", "archive_keep_s", "archive_every_s"),
               non_negative=("archive_max_mb",))


@dataclass(frozen=True)
class OwnershipConfig:
    """How often the catalog file(s) are checked for changes."""

    catalog_poll_s: float = CATALOG_POLL_S

    def __post_init__(self) -> None:
        _check(self, positive=("catalog_poll_s",))


@dataclass
class CollectorConfig:
    host: str = "127.0.0.1"
    port: int = 4318
    catalog: Path | None = None
    topology: Path | None = None
    scrape: list[str] = field(default_factory=list)
    scrape_interval_s: float = 5.0
    # The host each topology service is scraped at, ``{service}`` standing for its name.
    scrape_host_template: str = "127.0.0.1"
    data_dir: Path | None = None
    retention_s: float = 900.0
    bucket_s: float = 1.0
    default_window_s: float = 60.0
    max_body_bytes: int = MAX_BODY_BYTES
    # The memory budget the caps of pairing and the diagnosis are derived from.
    memory_budget_mb: float = MEMORY_BUDGET_MB
    graph: GraphConfig = field(default_factory=GraphConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    diagnosis: DiagnosisConfig = field(default_factory=DiagnosisConfig)
    paging: PagingConfig = field(default_factory=PagingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ownership: OwnershipConfig = field(default_factory=OwnershipConfig)
    mesh: MeshConfig = field(default_factory=lambda: MeshConfig())

    def __post_init__(self) -> None:
        _check(self, positive=("scrape_interval_s", "retention_s", "bucket_s",
                               "default_window_s", "max_body_bytes", "memory_budget_mb"))

    @property
    def memory(self) -> MemoryLimits:
        return MemoryLimits.from_budget(float(self.memory_budget_mb))


@dataclass(frozen=True)
class MeshConfig:
    """The service-mesh source (``collector.mesh``): the Prometheus that holds the sidecars'
    Istio / Linkerd series (None: no mesh source), how often it is queried, the window of
    each query (its ``rate``/``increase`` range), and the caps on the mesh view kept."""

    prometheus: str | None = None
    poll_s: float = 15.0
    window_s: float = 60.0
    timeout_s: float = 5.0
    max_nodes: int = 2_000
    max_edges: int = 10_000

    def __post_init__(self) -> None:
        _check(self, positive=("poll_s", "window_s", "timeout_s", "max_nodes", "max_edges"))
        if self.prometheus is not None and not self.prometheus.startswith(
                ("http://", "https://")):
            raise ValueError(f"MeshConfig.prometheus must be an http(s) URL, "
                             f"got {self.prometheus!r}")
