"""``python -m dashboard``: serve the dashboard (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from collector.ownership.catalog import CatalogInvalid
from dashboard.app import Settings, create_app

MIN_REFRESH_MS = 250


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an http(s) URL; give one like http://127.0.0.1:4318"
        )
    return value.rstrip("/")


def _refresh(value: str) -> int:
    try:
        ms = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of ms") from None
    if ms < MIN_REFRESH_MS:
        raise argparse.ArgumentTypeError(f"refresh must be at least {MIN_REFRESH_MS} ms")
    return ms


def _window(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError("the window must be between 1 and 3600 seconds")
    return seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Conway dashboard: the live call graph grouped by team, and who to page.",
    )
    p.add_argument("--collector", type=_url, default="http://127.0.0.1:4318",
                   help="collector base URL (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8050, help="port to bind (default %(default)s)")
    p.add_argument("--demo-admin", type=_url, default=None,
                   help="demo control API URL; enables the /demo page")
    p.add_argument("--demo-token", default=None,
                   help="control API token (default: env CONWAY_ADMIN_TOKEN)")
    p.add_argument("--refresh-ms", type=_refresh, default=1500,
                   help="how often the pages poll the collector (default %(default)s)")
    p.add_argument("--window-s", type=_window, default=60.0,
                   help="statistics window asked from the collector (default %(default)s)")
    src = p.add_argument_group(
        "source", "where the graph comes from: one collector's API (default), or Prometheus "
        "scraping several collectors (no incidents / root cause: those need the traces)")
    src.add_argument("--source", choices=("collector", "prometheus"), default="collector",
                     help="graph source (default %(default)s)")
    src.add_argument("--prometheus-url", type=_url, default="http://127.0.0.1:9090",
                     help="Prometheus base URL for --source prometheus (default %(default)s)")
    src.add_argument("--catalog", type=Path, default=None,
                     help="Backstage catalog-info.yaml (file or folder) giving ownership with "
                          "--source prometheus")
    src.add_argument("--prometheus-scrape-interval", type=_window, default=15.0, metavar="S",
                     help="Prometheus' scrape interval, for rate() ranges (default %(default)s)")
    args = p.parse_args(argv)
    if args.catalog is not None and not args.catalog.exists():
        p.error(f"--catalog {args.catalog} does not exist; give a catalog-info.yaml file or "
                "folder")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = Settings(
        collector_url=args.collector,
        demo_admin_url=args.demo_admin,
        demo_token=args.demo_token or os.environ.get("CONWAY_ADMIN_TOKEN") or None,
        refresh_ms=args.refresh_ms,
        window_s=args.window_s,
        source=args.source,
        prometheus_url=args.prometheus_url,
        catalog=args.catalog,
        prometheus_scrape_interval_s=args.prometheus_scrape_interval,
    )
    if config.source == "prometheus" and config.catalog is None:
        print("warning: --source prometheus without --catalog: every service is shown as an "
              "orphan (give --catalog catalog/catalog-info.yaml)", file=sys.stderr)
    try:
        app = create_app(config)
    except CatalogInvalid as exc:
        print(f"error: the catalog is invalid, fix it and start again:\n{exc}", file=sys.stderr)
        return 2
    # One line per poll from every open browser drowns everything else: keep warnings only.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"dashboard on http://{args.host}:{args.port} reading {config.source_url}"
          f" ({config.source})",
          file=sys.stderr, flush=True)
    app.run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
