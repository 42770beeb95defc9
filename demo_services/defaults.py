"""Default addresses shared by the commands (kept import-light for the CLI)."""

from __future__ import annotations

DEFAULT_COLLECTOR = "http://127.0.0.1:4318"
DEFAULT_ADMIN_PORT = 8100
DEFAULT_ADMIN = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
TOKEN_ENV = "CONWAY_ADMIN_TOKEN"
