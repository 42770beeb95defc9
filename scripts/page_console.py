"""The demo's pager: an Alertmanager webhook receiver that prints each page to the console.

``make demo`` routes Conway's alerts through a real Alertmanager to here: ``/page`` receives
the root cause's team's pages (``severity="page"``), ``/info`` the impacted teams' ``info``
alerts, as chat would. Each alert becomes one line, e.g.::

    PAGE → payments (PagerDuty: PPAY001): payment errors: page payments; impacted checkout
    info → orders (#team-orders): checkout is impacted by payment (errors), owned by payments
    RESOLVED → payments: payment errors

Run: python scripts/page_console.py --port 9097
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def lines(path: str, notification: dict[str, Any]) -> list[str]:
    out = []
    for alert in notification.get("alerts", []):
        lab, ann = alert.get("labels", {}), alert.get("annotations", {})
        team = lab.get("team") or ann.get("owner") or "no owner"
        what = f"{lab.get('service', '?')} {ann.get('kind', '')}".strip()
        if alert.get("status") == "resolved":
            word = "RESOLVED" if path == "/page" else "info resolved"
            out.append(f"{word} → {team}: {what}")
        elif path == "/page":
            contact = ann.get("on_call") or ann.get("channel") or "no on-call known"
            out.append(f"PAGE → {team} ({contact}): {ann.get('summary', what)}")
        else:
            out.append(f"info → {team} ({ann.get('channel', 'chat')}): "
                       f"{ann.get('summary', what)}")
    return out


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (a readiness check)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        size = min(int(self.headers.get("Content-Length", 0) or 0), 1 << 20)
        try:
            body = json.loads(self.rfile.read(size) or b"{}")
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        for line in lines(self.path, body if isinstance(body, dict) else {}):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9097)
    args = p.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"conway page console listening on http://{args.host}:{args.port} "
          f"(/page, /info)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
