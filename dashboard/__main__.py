"""``python -m dashboard``: serve the dashboard (see ``--help``).

Served by waitress, a production WSGI server (not Flask's development server, which starts a
thread per connection): ``--threads`` (default 16) worker threads run the requests however
many connections are open (an idle connection costs no thread). At most ``--max-connections``
(default 1000) are open at once; past it the oldest connection with no request in progress
(idle, or still sending its request) is closed to make room, so idle connections never lock
browsers out (waitress alone would stop accepting until they time out). A connection with no
request in progress and no byte received for ``--idle-timeout`` seconds (default 30) is
closed. The process' open-file limit is raised (up to its hard limit) to hold the connections.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from collector.ownership.catalog import CatalogInvalid
from dashboard.app import Settings, create_app

MIN_REFRESH_MS = 250
# Worker threads running requests (Dash callbacks each read the collector).
THREADS = 16
# Connections open at once; past it the oldest one with no request in progress is closed.
MAX_CONNECTIONS = 1000
# Seconds a connection may stay without a request in progress and without a byte received.
IDLE_TIMEOUT_S = 30
# Connections accepted per turn of the server's loop.
ACCEPT_BATCH = 64
# File descriptors the process needs besides its connections (files, listeners, trigger).
SPARE_FDS = 128


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


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return n


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
        "scraping several collectors (incidents only with --alertmanager: the root cause "
        "needs the traces, which the collectors page on)")
    src.add_argument("--source", choices=("collector", "prometheus"), default="collector",
                     help="graph source (default %(default)s)")
    src.add_argument("--prometheus-url", type=_url, default="http://127.0.0.1:9090",
                     help="Prometheus base URL for --source prometheus (default %(default)s)")
    src.add_argument("--catalog", type=Path, default=None,
                     help="Backstage catalog-info.yaml (file or folder) giving ownership with "
                          "--source prometheus")
    src.add_argument("--prometheus-scrape-interval", type=_window, default=15.0, metavar="S",
                     help="Prometheus' scrape interval, for rate() ranges (default %(default)s)")
    src.add_argument("--alertmanager", type=_url, default=None, metavar="URL",
                     help="with --source prometheus: read the open incidents the collectors "
                          "page for back from this Alertmanager (their --alertmanager)")
    src.add_argument("--mesh-prometheus", type=_url, default=None, metavar="URL",
                     help="with --source prometheus: a Prometheus holding Istio "
                          "(istio_requests_total) or Linkerd (response_total) sidecar series "
                          "(often the same as --prometheus-url): calls only the mesh sees "
                          "join the graph")
    srv = p.add_argument_group("server", "the HTTP server (waitress) and its limits")
    srv.add_argument("--threads", type=_positive_int, default=THREADS, metavar="N",
                     help="worker threads running requests (default %(default)s)")
    srv.add_argument("--max-connections", type=_positive_int, default=MAX_CONNECTIONS,
                     metavar="N", help="connections open at once; past it the oldest one with "
                                       "no request in progress is closed to make room "
                                       "(default %(default)s)")
    srv.add_argument("--idle-timeout", type=_positive_int, default=IDLE_TIMEOUT_S, metavar="S",
                     help="seconds a connection may stay with no request in progress and no "
                          "byte received before it is closed (default %(default)s)")
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
        alertmanager_url=args.alertmanager,
        mesh_prometheus_url=args.mesh_prometheus,
    )
    if config.source == "prometheus" and config.catalog is None:
        print("warning: --source prometheus without --catalog: every service is shown as an "
              "orphan (give --catalog catalog/catalog-info.yaml)", file=sys.stderr)
    try:
        app = create_app(config)
    except CatalogInvalid as exc:
        print(f"error: the catalog is invalid, fix it and start again:\n{exc}", file=sys.stderr)
        return 2
    # waitress logs no request, only warnings and errors (an exception in a callback).
    logging.basicConfig(level=logging.WARNING)
    max_connections = _open_files_for(args.max_connections)
    try:
        server = make_server(app.server, args.host, args.port, threads=args.threads,
                             max_connections=max_connections, idle_timeout_s=args.idle_timeout)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(f"dashboard on http://{args.host}:{args.port} reading {config.source_url}"
          f" ({config.source})",
          file=sys.stderr, flush=True)
    server.run()
    return 0


class _Server(TcpWSGIServer):
    """waitress's TCP server, but at ``connection_limit`` it closes the oldest connection with
    no request in progress to make room (waitress would stop accepting until one closes: idle
    connections lock everyone out until their ``channel_timeout``); it stops accepting only
    while every connection has a request in progress."""

    _next_cleanup = 0.0

    def _idle_channel(self) -> HTTPChannel | None:
        for channel in self.active_channels.values():  # oldest first
            if not (channel.requests or channel.will_close or channel.close_when_flushed
                    or channel.total_outbufs_len):
                return channel
        return None

    def readable(self) -> bool:
        now = time.time()
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)  # closes the connections idle past channel_timeout
        return bool(self.accepting) and (
            len(self.active_channels) < self.adj.connection_limit
            or self._idle_channel() is not None)

    def handle_accept(self) -> None:
        # Up to ACCEPT_BATCH connections at once: one per turn of the loop (which visits every
        # connection) would take seconds to drain a backlog of thousands.
        for _ in range(ACCEPT_BATCH):
            if len(self.active_channels) >= self.adj.connection_limit:
                victim = self._idle_channel()
                if victim is None:
                    return  # every connection is busy: the new one waits in the backlog
                victim.will_close = True  # closed by the loop before anything else is read
            before = len(self.active_channels)
            super().handle_accept()
            if len(self.active_channels) == before:
                return  # none waiting (or accept failed)


def make_server(wsgi_app: Any, host: str, port: int, *, threads: int = THREADS,
                max_connections: int = MAX_CONNECTIONS,
                idle_timeout_s: int = IDLE_TIMEOUT_S) -> Any:
    """A waitress server for ``wsgi_app`` (bound now; ``run()`` serves until interrupted)."""
    adj = Adjustments(host=host, port=port, threads=threads, connection_limit=max_connections,
                      channel_timeout=idle_timeout_s, cleanup_interval=1, backlog=2048,
                      # poll(): select() cannot watch more than 1024 connections
                      asyncore_use_poll=True, ident="conway-dashboard")
    socket_map: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers = [_Server(wsgi_app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info)
               for info in adj.listen]
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port)
                                               for s in servers], dispatcher)


def _open_files_for(max_connections: int) -> int:
    """The connection limit the open-file limit allows, raising its soft limit (up to the hard
    one) to hold ``max_connections``: past the limit accepting would fail over and over."""
    wanted = max_connections + SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (OSError, ValueError):
        pass
    if soft >= wanted:
        return max_connections
    allowed = max(1, soft - SPARE_FDS)
    print(f"warning: the open-file limit is {soft}: serving at most {allowed} connections, "
          f"not --max-connections {max_connections} (raise it with ulimit -n)",
          file=sys.stderr)
    return allowed


if __name__ == "__main__":
    sys.exit(main())
