"""Error answers of the HTTP edge: JSON ``{"error": message}``, never text that could be HTML.

Receivers that speak a protocol with its own error body (OTLP's ``google.rpc.Status``) answer
with their `collector.receivers.Receiver.fail`; everything else answers with `error`, and
Starlette's own 404/405 go through `http_error_handler`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def http_error_handler(
    ingest_paths: Sequence[str],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The Starlette exception handler for `HTTPException`; its 405 names ``ingest_paths``."""
    ingest = " or ".join(ingest_paths)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 404/405 answers are text; make them JSON like every other error.
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            message = (f"method {request.method} is not allowed on {request.url.path}; the "
                       f"read API is GET only, ingest is POST {ingest}")
        elif exc.status_code == 404:
            message = (f"no such endpoint {request.url.path!r:.200}; see /api/graph, "
                       f"/api/history, /api/services/NAME, /api/teams, /api/incidents, "
                       f"/metrics, /healthz")
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    return http_error
