"""Default addresses shared by the commands (kept import-light for the CLI)."""

from __future__ import annotations

import os

HOST = "127.0.0.1"
# Environment variable naming how a service reaches its peers, e.g. "{service}" in containers
# (http://payment:8109); unset, every peer is at 127.0.0.1, as `up` runs them.
PEER_HOST_ENV = "CONWAY_PEER_HOST_TEMPLATE"


def peer_host(template: str | None, service: str) -> str:
    """The host a peer service is called at: ``template`` with ``{service}`` filled in."""
    return template.format(service=service) if template else HOST


def check_peer_template(template: str) -> str:
    """Validate a peer host template; raises ValueError saying what is wrong."""
    try:
        host = template.format(service="payment")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"peer host template {template!r} is not valid: only {{service}} may be used "
            f"(e.g. {{service}} or {{service}}.shop.svc)"
        ) from exc
    if not host or any(c in host for c in "/: "):
        raise ValueError(f"peer host template {template!r} must give a bare host name")
    return template


DEFAULT_COLLECTOR = "http://127.0.0.1:4318"
DEFAULT_ADMIN_PORT = 8100
DEFAULT_ADMIN = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
TOKEN_ENV = "CONWAY_ADMIN_TOKEN"
# `make demo` makes a fresh token each run and leaves it here (mode 0600), so the fault,
# clear and scenario commands run from the repository find it without an export.
TOKEN_FILE = "data/admin-token"


def admin_token() -> str | None:
    """The control API token: $CONWAY_ADMIN_TOKEN, else the one `make demo` wrote."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    try:
        with open(TOKEN_FILE, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
