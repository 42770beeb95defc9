"""``GET /api/incidents[?status=open|resolved]``: incidents newest first, at most
``MAX_LISTED``, as the last evaluation tick left them (a read never evaluates).
``GET /api/incidents/{id}``: one incident with its whole stored history and the graph stored
with it (the root cause, its blast radius and their calls when it opened); 404 when unknown.
``GET /api/diagnosis``: the last evaluation tick's verdict: its time and number, the root
causes it paged (with their blast radius) and the candidates it ``held_back`` with why (a busy
host's shared slowdown, a thin baseline): the answer to "why is this slow service not paged?".
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.diagnosis.assessment import Assessment
from collector.diagnosis.incidents import IncidentManager

MAX_LISTED = 200
STATUSES = ("open", "resolved")


def incidents_routes(manager: IncidentManager) -> list[Route]:
    async def incidents(request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            return JSONResponse(
                {"error": f"unknown status {status!r}: use status=open or status=resolved, "
                          f"or leave it out for both"}, status_code=400)
        listed = await run_in_threadpool(manager.incidents_json, status, MAX_LISTED)
        return JSONResponse({"incidents": listed})

    async def incident(request: Request) -> JSONResponse:
        iid = request.path_params["id"]
        found = await run_in_threadpool(manager.detail_json, iid)
        if found is None:
            return JSONResponse({"error": f"no incident {iid[:80]!r} (it may have been pruned: "
                                          f"the store keeps the newest incidents)"},
                                status_code=404)
        return JSONResponse(found)

    return [Route("/api/incidents", incidents, methods=["GET"]),
            Route("/api/incidents/{id}", incident, methods=["GET"])]


def diagnosis_route(latest: Callable[[], Assessment]) -> Route:
    async def diagnosis(request: Request) -> JSONResponse:
        a = latest()  # immutable: read as the tick left it
        return JSONResponse({"at": a.at, "evaluations": a.seq,
                             "root_causes": [c.to_json() for c in a.root_causes],
                             "held_back": [h.to_json() for h in a.held_back]})

    return Route("/api/diagnosis", diagnosis, methods=["GET"])
