"""Imported once by ``up``'s fork server so that forked services start warm.

Besides the service code this imports what the service would otherwise import lazily at start
(uvicorn's HTTP protocol and lifespan, the OTLP exporter's requests session, httpx's transport),
measured with ``sys.modules`` before and after a service starts. Optional packages that
httpcore probes for are imported when installed.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401
import encodings.idna  # noqa: F401
import importlib

import certifi  # noqa: F401
import h11  # noqa: F401
import httpcore  # noqa: F401
import requests  # noqa: F401
import urllib3  # noqa: F401
import uvicorn.lifespan.on  # noqa: F401
import uvicorn.protocols.http.h11_impl  # noqa: F401

import demo_services.cli  # noqa: F401
import demo_services.runner  # noqa: F401

for _optional in ("trio", "sniffio", "anyio._backends._asyncio"):
    try:
        importlib.import_module(_optional)
    except ImportError:
        pass
