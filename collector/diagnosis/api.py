"""``GET /api/incidents[?status=open|resolved]``: incidents newest first, at most
``MAX_LISTED``. Each call first runs the lifecycle on a fresh default-window snapshot, so
the answer is current even between background evaluations."""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.diagnosis.incidents import IncidentManager

MAX_LISTED = 200
STATUSES = ("open", "resolved")


def incidents_route(manager: IncidentManager, evaluate: Callable[[], None]) -> Route:
    async def incidents(request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            return JSONResponse(
                {"error": f"unknown status {status!r}: use status=open or status=resolved, "
                          f"or leave it out for both"}, status_code=400)
        await run_in_threadpool(evaluate)
        listed = manager.incidents(status, MAX_LISTED)
        return JSONResponse({"incidents": [i.to_json() for i in listed]})

    return Route("/api/incidents", incidents, methods=["GET"])
