"""``python -m collector``: run the collector (OTLP/HTTP receiver, API, ``/metrics``) with uvicorn.

Bad arguments exit with status 2 and a message; SIGINT/SIGTERM shut down cleanly (uvicorn
handles both and runs the shutdown hooks).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from collector.ownership.catalog import CatalogInvalid
from collector.scraper import TopologyError, topology_targets
from collector.service import CollectorConfig
from collector.wiring import build_app, build_service


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
    p.add_argument("--data-dir", type=Path, help="directory for state that survives restarts")
    p.add_argument("--retention", type=_positive(float), default=900.0, metavar="S",
                   help="seconds of statistics kept (default 900)")
    p.add_argument("--max-body-bytes", type=_positive(int), default=8 * 1024 * 1024,
                   metavar="N", help="largest request body accepted (default 8 MiB)")
    p.add_argument("--pairing-ttl", type=_positive(float), default=2.0, metavar="S",
                   help="seconds a span waits for its other half (default 2)")
    a = p.parse_args(argv)
    if not 0 <= a.port < 65536:
        p.error(f"--port must be 0..65535, got {a.port}")
    if a.catalog is not None and not a.catalog.exists():
        p.error(f"--catalog {a.catalog} does not exist; give a catalog-info.yaml file or folder")
    if a.topology is not None:
        try:
            topology_targets(a.topology)
        except TopologyError as exc:
            p.error(str(exc))
    if a.retention < 1:
        p.error(f"--retention must be at least 1 second, got {a.retention}")
    for url in a.scrape:
        if not url.startswith(("http://", "https://")):
            p.error(f"--scrape {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8101/metrics)")
    if a.data_dir is not None:
        try:
            a.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            p.error(f"--data-dir {a.data_dir} cannot be created: {exc.strerror}")
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
        extra={"pairing_ttl_s": a.pairing_ttl},
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        service = build_service(config)
    except CatalogInvalid as exc:
        # No earlier good catalog exists at start-up, so there is nothing to keep in force.
        print(f"conway collector: the catalog is invalid, fix it and start again:\n{exc}",
              file=sys.stderr)
        return 2

    async def announce() -> None:
        print(f"conway collector listening on http://{config.host}:{config.port} "
              f"(OTLP/HTTP /v1/traces, API /api/graph, /metrics)", flush=True)

    service.on_startup.append(announce)
    server = uvicorn.Server(
        uvicorn.Config(build_app(service), host=config.host, port=config.port,
                       log_level="warning", lifespan="on", access_log=False)
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal for the
    # previous handler: make that a quiet, successful exit instead of a traceback.
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run()
    except KeyboardInterrupt:
        return 0
    return 0 if server.started else 1


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
