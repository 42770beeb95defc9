"""``python -m collector``: run the collector (OTLP/HTTP receiver, API, ``/metrics``) with uvicorn.

Bad arguments exit with status 2 and a message; SIGINT/SIGTERM shut down cleanly (uvicorn
handles both and runs the shutdown hooks, the last checkpoint among them). Every cap of
`collector.limits`, `collector.edge` and `collector.graph` has a flag; the ingest token comes
from ``--ingest-token`` or the environment variable ``CONWAY_INGEST_TOKEN``.

Data dir (``--data-dir``): locked for the process lifetime (``DIR/.lock`` holds the PID); a
second collector on it, a dir that cannot be written, or a state file that cannot be used
(``state.sqlite3``, ``incidents.sqlite3``: not SQLite, a damaged page, a directory, another
schema) exits with status 2 and one line naming the file and what is wrong. ``--reset-state``
renames such a file (with its -wal/-shm) to ``NAME.damaged-TIMESTAMP`` and starts without it.
Unreadable incident rows are skipped with a warning (counted as
``conway_state_skipped_rows``); a zero-byte file starts empty with a warning. A full disk
later never stops the collector: ``/healthz`` says ``degraded`` (still 200) while a file
cannot be written (see `collector.checkpoint.StateFiles`).

Connections (`collector.edge.ConnectionGuard`): ``--max-connections`` (default 1024) open at
once, of them ``--max-idle-connections`` (default 512) without a request in progress (past it
the oldest idle one is closed to make room); ``--header-timeout`` (default 5 s) to send a
request's complete headers, ``--keep-alive-timeout`` (default 5 s) idle between requests.
A connection past the limit with none idle gets 503 with ``Retry-After``. Counted on
``/metrics``: ``conway_http_rejected_total{reason="connection_limit"}`` and
``conway_http_connections_closed_total{reason="header_timeout"|"keep_alive_timeout"|
"idle_evicted"}``. The process' open-file limit is raised (up to its hard limit) to hold them.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from collector import config as C
from collector import edge, limits, otlp
from collector.checkpoint import CheckpointError, lock_data_dir, move_aside
from collector.config import (
    CheckpointConfig,
    CollectorConfig,
    DiagnosisConfig,
    EdgeConfig,
    GraphConfig,
    MeshConfig,
    PagingConfig,
)
from collector.diagnosis.incidents import IncidentStoreError
from collector.ownership.catalog import CatalogInvalid
from collector.pairing import PairingConfig
from collector.scraper import topology_targets
from collector.service import CollectorService
from collector.topology import TopologyError
from collector.wiring import build_app, build_service

TOKEN_ENV = "CONWAY_INGEST_TOKEN"
# Connections served at once (see `collector.edge.ConnectionGuard`): idle ones are closed
# after the header or keep-alive timeout, or to make room past the idle limit.
MAX_CONNECTIONS = C.MAX_CONNECTIONS
# File descriptors the process needs besides its connections (files, the loop, listeners).
SPARE_FDS = 256
# Cyclic GC thresholds for the collector process (CPython's defaults are 700, 10, 10). Spans
# stay alive for seconds (waiting for their trace to go quiet or for their other half), so
# with the defaults the collector rescans a large young heap many times per request: about
# a fifth of the ingest CPU. The hot path makes no reference cycles; collecting 70 times less
# often leaves memory bounded by the same limits and frees what cycles the server makes.
GC_THRESHOLDS = (50_000, 10, 10)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> CollectorConfig:
    p = argparse.ArgumentParser(
        prog="python -m collector",
        description="Conway collector: OTLP/HTTP traces in, live service graph out.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4318, help="port to bind (default 4318)")
    p.add_argument("--catalog", type=Path, help="Backstage catalog-info.yaml (file or folder)")
    p.add_argument("--topology", type=Path, help="topology YAML: services' ports to scrape")
    p.add_argument("--scrape", nargs="+", default=[], metavar="URL",
                   help="Prometheus /metrics URLs to scrape")
    p.add_argument("--scrape-interval", type=_positive(float), default=5.0, metavar="S",
                   help="seconds between scrapes (default 5)")
    p.add_argument("--data-dir", type=Path,
                   help="directory for state that survives restarts (state.sqlite3, "
                        "incidents.sqlite3); one collector per directory (it is locked)")
    p.add_argument("--reset-state", action="store_true",
                   help="when a --data-dir file cannot be used (damaged, not SQLite, another "
                        "schema), rename it to NAME.damaged-TIMESTAMP and start without it, "
                        "instead of exiting with status 2")
    p.add_argument("--retention", type=_positive(float), default=900.0, metavar="S",
                   help="seconds of statistics kept (default 900)")
    p.add_argument("--max-body-bytes", type=_positive(int), default=C.MAX_BODY_BYTES,
                   metavar="N", help="largest request body accepted (default 8 MiB)")
    p.add_argument("--pairing-ttl", type=_positive(float), default=C.PAIRING_TTL_S, metavar="S",
                   help="seconds a span waits for its other half "
                        f"(default {C.PAIRING_TTL_S:g})")
    p.add_argument("--span-multiplier-key", metavar="ATTRIBUTE",
                   help="span attribute saying how many calls a head-sampled span stands for "
                        "(Tempo's span_multiplier_key); the tracestate's OpenTelemetry "
                        "sampling threshold (ot=th:...) is always read")
    lim = p.add_argument_group("limits (each refusal is counted on /metrics with a reason)")
    lim.add_argument("--max-nodes", type=_positive(int), default=C.MAX_NODES, metavar="N",
                     help=f"services and virtual nodes kept (default {C.MAX_NODES})")
    lim.add_argument("--max-edges", type=_positive(int), default=C.MAX_EDGES, metavar="N",
                     help=f"edges kept (default {C.MAX_EDGES})")
    lim.add_argument("--memory-budget-mb", type=_positive(float),
                     default=limits.MEMORY_BUDGET_MB, metavar="MB",
                     help="memory budget of the whole process: the caps of pending traces, "
                          "pairing and re-sent-span detection derive from it (default "
                          f"{limits.MEMORY_BUDGET_MB}, at least {limits.MIN_MEMORY_BUDGET_MB})")
    lim.add_argument("--max-pending", type=_positive(int), default=None,
                     metavar="N", help="halves waiting to be paired (default: from "
                                       f"--memory-budget-mb, {PairingConfig.max_items} at "
                                       f"{limits.MEMORY_BUDGET_MB})")
    lim.add_argument("--max-attributes", type=_positive(int), default=limits.MAX_ATTRIBUTES,
                     metavar="N", help="attributes kept per span; more are dropped "
                                       f"(default {limits.MAX_ATTRIBUTES})")
    lim.add_argument("--max-value-chars", type=_positive(int), default=limits.MAX_VALUE_CHARS,
                     metavar="N", help="longer attribute values are truncated "
                                       f"(default {limits.MAX_VALUE_CHARS})")
    lim.add_argument("--max-service-chars", type=_positive(int),
                     default=limits.MAX_SERVICE_CHARS, metavar="N",
                     help="spans of a longer service.name are rejected "
                          f"(default {limits.MAX_SERVICE_CHARS})")
    lim.add_argument("--span-time-window", type=_non_negative, default=limits.TIME_WINDOW_S,
                     metavar="S", help="reject spans starting or ending more than S seconds "
                                       "from the collector clock; 0 accepts any time, for "
                                       "replaying recorded traces (default 86400)")
    lim.add_argument("--max-inflight", type=_positive(int), default=C.MAX_INFLIGHT,
                     metavar="N", help="receiver requests in progress before answering 503 "
                                       f"(default {C.MAX_INFLIGHT})")
    lim.add_argument("--max-inflight-bytes", type=_positive(int),
                     default=C.MAX_INFLIGHT_BYTES, metavar="N",
                     help="request-body bytes held at once before answering 503 "
                          f"(default {C.MAX_INFLIGHT_BYTES})")
    lim.add_argument("--body-timeout", type=_positive(float), default=C.BODY_TIMEOUT_S,
                     metavar="S", help="seconds to receive a whole body before answering 408 "
                                       f"(default {C.BODY_TIMEOUT_S:g})")
    lim.add_argument("--max-connections", type=_positive(int), default=MAX_CONNECTIONS,
                     metavar="N", help="connections open at once; past it the oldest idle one "
                                       "is closed, or with none idle the new one gets 503 "
                                       "with Retry-After, counted as "
                                       "conway_http_rejected_total{reason=\"connection_limit\"}"
                                       f" (default {MAX_CONNECTIONS})")
    lim.add_argument("--max-idle-connections", type=_positive(int),
                     default=C.MAX_IDLE_CONNECTIONS, metavar="N",
                     help="connections open without a request in progress (headers not "
                          "complete, or idle between requests); past it the oldest is closed, "
                          "counted as conway_http_connections_closed_total"
                          f"{{reason=\"idle_evicted\"}} (default {C.MAX_IDLE_CONNECTIONS})")
    lim.add_argument("--header-timeout", type=_positive(float), default=C.HEADER_TIMEOUT_S,
                     metavar="S", help="seconds a connection has to send a request's complete "
                                       "headers (from connecting, or from the request's first "
                                       "byte on a kept-alive connection); then it is closed, "
                                       "counted as conway_http_connections_closed_total"
                                       "{reason=\"header_timeout\"} "
                                       f"(default {C.HEADER_TIMEOUT_S:g})")
    lim.add_argument("--keep-alive-timeout", type=_positive(int),
                     default=C.KEEP_ALIVE_TIMEOUT_S, metavar="S",
                     help="whole seconds a connection may stay idle after a response; then it "
                          "is closed, counted as conway_http_connections_closed_total"
                          "{reason=\"keep_alive_timeout\"} "
                          f"(default {C.KEEP_ALIVE_TIMEOUT_S})")
    p.add_argument("--ingest-token", metavar="T", default=os.environ.get(TOKEN_ENV) or None,
                   help="require 'Authorization: Bearer T' on POST /v1/traces and "
                        f"/api/v2/spans (default: ${TOKEN_ENV}, else no token; prefer the "
                        f"variable: command lines are visible to other local users)")
    p.add_argument("--scrape-host-template", default="127.0.0.1", metavar="HOST",
                   help="host the --topology services are scraped at; {service} stands for the "
                        "service name, e.g. '{service}' in containers (default 127.0.0.1)")
    p.add_argument("--diagnosis", action="append", default=[], metavar="OPTION=SECONDS",
                   help="tune diagnosis timing and load, repeatable: "
                        + ", ".join(f"{k} (default {v:g})"
                                   for k, v in vars(DiagnosisConfig()).items())
                        + "; span_budget is spans/s analysed in full before traces are "
                          "head-sampled (0: no budget)")
    pg = p.add_argument_group("paging (see collector/paging.py)")
    pg.add_argument("--alertmanager", action="append", default=[], metavar="URL",
                    help="Alertmanager to send the root cause's page and the impacted teams' "
                         "info alerts to (API v2), repeatable for an HA pair, e.g. "
                         "http://127.0.0.1:9093")
    pg.add_argument("--page-webhook", action="append", default=[], metavar="URL",
                    help="URL to POST the same alerts to as PagerDuty Events v2 shaped JSON "
                         "(trigger / resolve, a stable dedup_key), repeatable")
    pg.add_argument("--dashboard-url", metavar="URL",
                    help="the dashboard's address, for the links in alerts "
                         "(e.g. http://127.0.0.1:8050)")
    p.add_argument("--checkpoint-interval", type=_positive(float),
                   default=C.CHECKPOINT_INTERVAL_S, metavar="S",
                   help="seconds between checkpoints to --data-dir "
                        f"(default {C.CHECKPOINT_INTERVAL_S:g})")
    p.add_argument("--archive-max-mb", type=_non_negative, default=256.0, metavar="MB",
                   help="with --data-dir, the graph of each minute is archived for ?at= beyond "
                        "--retention (collector/archive.py), the oldest minutes going past this "
                        "size (default 256; 0: no archive)")
    p.add_argument("--archive-keep", type=_positive(float), default=7 * 86_400.0, metavar="S",
                   help="seconds archived minutes are kept (default 604800, a week)")
    p.add_argument("--archive-every", type=_positive(float), default=60.0, metavar="S",
                   help="the archive's resolution: one graph of the last S seconds every S "
                        "seconds (default 60)")
    mg = p.add_argument_group("service mesh (see collector/mesh.py)")
    mg.add_argument("--mesh-prometheus", metavar="URL",
                    help="a Prometheus holding Istio (istio_requests_total) and/or Linkerd "
                         "(response_total) sidecar series: calls the mesh sees join the graph, "
                         "e.g. http://prometheus.istio-system:9090")
    mg.add_argument("--mesh-poll", type=_positive(float), default=15.0, metavar="S",
                    help="seconds between queries of --mesh-prometheus (default 15)")
    mg.add_argument("--mesh-window", type=_positive(float), default=60.0, metavar="S",
                    help="the range of each mesh query's rate() (default 60)")
    a = p.parse_args(argv)
    if a.mesh_prometheus is not None and urlsplit(a.mesh_prometheus).scheme not in (
            "http", "https"):
        p.error(f"--mesh-prometheus {a.mesh_prometheus!r} is not an http(s) URL "
                "(e.g. http://127.0.0.1:9090)")
    if not 0 <= a.port < 65536:
        p.error(f"--port must be 0..65535, got {a.port}")
    if a.catalog is not None and not a.catalog.exists():
        p.error(f"--catalog {a.catalog} does not exist; give a catalog-info.yaml file or folder")
    if a.topology is not None:
        try:
            topology_targets(a.topology)
        except TopologyError as exc:
            p.error(str(exc))
    diagnosis_options: dict[str, float] = {}
    for item in a.diagnosis:
        key, _, value = item.partition("=")
        try:
            diagnosis_options[key.strip()] = float(value)
        except ValueError:
            p.error(f"--diagnosis {item!r}: expected OPTION=SECONDS (span_budget: spans/s), "
                    "e.g. trace_quiet_s=1.0 or span_budget=50000")
    try:
        diagnosis_config = DiagnosisConfig.from_options(diagnosis_options)
    except ValueError as exc:
        p.error(f"--diagnosis: {exc}")
    try:
        memory = limits.MemoryLimits.from_budget(a.memory_budget_mb)
    except ValueError as exc:
        p.error(f"--memory-budget-mb: {exc}")
    if "{" in a.scrape_host_template.replace("{service}", "") or any(
            c in a.scrape_host_template for c in "/: "):
        p.error(f"--scrape-host-template {a.scrape_host_template!r} must be a bare host name, "
                "with {service} standing for the service name")
    if a.retention < 1:
        p.error(f"--retention must be at least 1 second, got {a.retention}")
    if a.archive_every > a.retention:
        p.error(f"--archive-every {a.archive_every:g} is longer than --retention "
                f"{a.retention:g}: an archived period must lie within the retained statistics")
    for flag, urls in (("--alertmanager", a.alertmanager), ("--page-webhook", a.page_webhook),
                       ("--dashboard-url", [a.dashboard_url] if a.dashboard_url else [])):
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                p.error(f"{flag} {url!r} is not an http(s) URL (e.g. http://127.0.0.1:9093)")
    for url in a.scrape:
        if not url.startswith(("http://", "https://")):
            p.error(f"--scrape {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8101/metrics)")
    if a.reset_state and a.data_dir is None:
        p.error("--reset-state needs --data-dir")
    if a.data_dir is not None:
        try:
            a.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            p.error(f"--data-dir {a.data_dir} cannot be created: {exc.strerror}")
    if a.max_inflight_bytes < a.max_body_bytes:
        p.error(f"--max-inflight-bytes ({a.max_inflight_bytes}) must be at least "
                f"--max-body-bytes ({a.max_body_bytes}), or no body of the largest allowed "
                f"size could ever be accepted")
    if a.max_idle_connections > a.max_connections:
        p.error(f"--max-idle-connections ({a.max_idle_connections}) must be at most "
                f"--max-connections ({a.max_connections})")
    if a.ingest_token is not None and (not a.ingest_token.strip()
                                       or any(c.isspace() for c in a.ingest_token)):
        p.error("--ingest-token must be non-empty and contain no spaces")
    if a.ingest_token is None and not _is_loopback(a.host):
        print(f"conway collector: warning: listening on {a.host} with no ingest token: anyone "
              f"who can reach it can send spans; set --ingest-token or {TOKEN_ENV}",
              file=sys.stderr)
    return CollectorConfig(
        host=a.host,
        port=a.port,
        catalog=a.catalog,
        topology=a.topology,
        scrape=list(a.scrape),
        scrape_interval_s=a.scrape_interval,
        data_dir=a.data_dir,
        retention_s=a.retention,
        default_window_s=min(60.0, a.retention),
        max_body_bytes=a.max_body_bytes,
        memory_budget_mb=a.memory_budget_mb,
        scrape_host_template=a.scrape_host_template,
        graph=GraphConfig(
            max_nodes=a.max_nodes, max_edges=a.max_edges, pairing_ttl_s=a.pairing_ttl,
            span_multiplier_key=a.span_multiplier_key,
            pairing_max_items=(memory.pairing_max_items if a.max_pending is None
                               else a.max_pending)),
        edge=EdgeConfig(
            max_inflight_requests=a.max_inflight, max_inflight_bytes=a.max_inflight_bytes,
            body_timeout_s=a.body_timeout, max_connections=a.max_connections,
            max_idle_connections=a.max_idle_connections, header_timeout_s=a.header_timeout,
            keep_alive_timeout_s=a.keep_alive_timeout, ingest_token=a.ingest_token,
            span_limits=limits.SpanLimits(
                max_attributes=a.max_attributes, max_value_chars=a.max_value_chars,
                max_service_chars=a.max_service_chars, time_window_s=a.span_time_window)),
        diagnosis=diagnosis_config,
        paging=PagingConfig(alertmanager=tuple(a.alertmanager),
                            page_webhook=tuple(a.page_webhook),
                            dashboard_url=a.dashboard_url),
        checkpoint=CheckpointConfig(interval_s=a.checkpoint_interval,
                                    reset_state=a.reset_state,
                                    archive_max_mb=a.archive_max_mb,
                                    archive_keep_s=a.archive_keep,
                                    archive_every_s=a.archive_every),
        mesh=MeshConfig(prometheus=a.mesh_prometheus, poll_s=a.mesh_poll,
                        window_s=a.mesh_window),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        # Held (the descriptor stays open) for the process lifetime: one collector per dir.
        data_dir_lock = lock_data_dir(config.data_dir) if config.data_dir is not None else None
        service = _build_service(config)
    except CatalogInvalid as exc:
        # No earlier good catalog exists at start-up, so there is nothing to keep in force.
        print(f"conway collector: the catalog is invalid, fix it and start again:\n{exc}",
              file=sys.stderr)
        return 2
    except (CheckpointError, IncidentStoreError) as exc:
        print(f"conway collector: {exc}", file=sys.stderr)
        return 2
    service.parts["data_dir_lock"] = data_dir_lock

    async def announce() -> None:
        print(f"conway collector listening on http://{config.host}:{config.port} "
              f"(OTLP/HTTP /v1/traces, API /api/graph, /metrics; protobuf decoder: "
              f"{otlp.FAST_DECODER_INFO})", flush=True)

    service.on_startup.append(announce)
    gc.set_threshold(*GC_THRESHOLDS)
    guard = edge.ConnectionGuard(config.edge.max_connections, config.edge.max_idle_connections,
                                 config.edge.header_timeout_s)
    service.metrics.register(guard)
    _raise_open_files(guard.max_connections + SPARE_FDS)
    # The guard bounds connections (uvicorn's limit_concurrency would count idle ones too and
    # refuse every request while they stay open); the collector serves no WebSocket.
    server = uvicorn.Server(
        uvicorn.Config(build_app(service), host=config.host, port=config.port,
                       log_level="warning", lifespan="on", access_log=False,
                       http=guard.protocol(), ws="none",
                       timeout_keep_alive=config.edge.keep_alive_timeout_s)
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal for the
    # previous handler: make that a quiet, successful exit instead of a traceback.
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run()
    except KeyboardInterrupt:
        return 0
    return 0 if server.started else 1


def _raise_open_files(wanted: int) -> None:
    """Raise the soft open-file limit towards ``wanted`` (at most the hard limit): with fewer,
    accepting stalls while the connections allowed are open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            target = soft
    if target < wanted:
        print(f"conway collector: warning: the open-file limit is {target}, below the "
              f"{wanted} that --max-connections needs; lower --max-connections or raise the "
              f"limit (ulimit -n)", file=sys.stderr)


def _build_service(config: CollectorConfig) -> CollectorService:
    """``build_service``; with ``--reset-state`` each data-dir file it cannot use is moved
    aside (``NAME.damaged-TIMESTAMP``, with its -wal and -shm) and the build tried again."""
    moved: set[Path] = set()
    while True:
        try:
            return build_service(config)
        except (CheckpointError, IncidentStoreError) as exc:
            path = exc.path
            if (not config.checkpoint.reset_state or path is None or path in moved
                    or not os.path.lexists(path)):
                raise
            moved.add(path)
            try:
                target = move_aside(path)
            except OSError as err:
                raise CheckpointError(f"{exc} (--reset-state cannot move it aside: "
                                      f"{err.strerror})", path) from None
            print(f"conway collector: --reset-state: {path} cannot be used, moved aside to "
                  f"{target.name}; starting without it", file=sys.stderr, flush=True)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
