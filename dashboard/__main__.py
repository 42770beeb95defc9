"""``python -m dashboard``: serve the dashboard (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

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
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = Settings(
        collector_url=args.collector,
        demo_admin_url=args.demo_admin,
        demo_token=args.demo_token or os.environ.get("CONWAY_ADMIN_TOKEN") or None,
        refresh_ms=args.refresh_ms,
        window_s=args.window_s,
    )
    app = create_app(config)
    # One line per poll from every open browser drowns everything else: keep warnings only.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"dashboard on http://{args.host}:{args.port} reading {config.collector_url}",
          file=sys.stderr, flush=True)
    app.run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
