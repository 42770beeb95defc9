"""``GET /api/incidents[?status=open|resolved]``: incidents newest first, at most
``MAX_LISTED``, as the last evaluation tick left them (a read never evaluates)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.diagnosis.incidents import IncidentManager

MAX_LISTED = 200
STATUSES = ("open", "resolved")


def incidents_route(manager: IncidentManager) -> Route:
    async def incidents(request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            return JSONResponse(
                {"error": f"unknown status {status!r}: use status=open or status=resolved, "
                          f"or leave it out for both"}, status_code=400)
        listed = await run_in_threadpool(manager.incidents_json, status, MAX_LISTED)
        return JSONResponse({"incidents": listed})

    return Route("/api/incidents", incidents, methods=["GET"])
