"""``GET /api/incidents[?status=open|resolved]``: incidents newest first, at most
``MAX_LISTED``, as the last evaluation tick left them (a read never evaluates).
``GET /api/incidents?at=T``: the incidents open at a past moment ``T`` (unix seconds or RFC
3339), as ``/api/graph?at=T`` lists them (``status`` as at T, ``status_now`` and
``resolved_at`` for what became of them, ``as_of``); 400 for a moment in the future or with
``status=resolved``.
``GET /api/incidents/{id}``: one incident with its whole stored history and the graph stored
with it (the root cause, its blast radius and their calls when it opened); 404 when unknown.
``GET /api/diagnosis``: the last evaluation tick's verdict: its time and number, the root
causes it paged (with their blast radius) and the candidates it ``held_back`` with why (a busy
host's shared slowdown, a thin baseline): the answer to "why is this slow service not paged?".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.diagnosis.assessment import Assessment
from collector.diagnosis.incidents import IncidentManager
from collector.history import parse_at

MAX_LISTED = 200
STATUSES = ("open", "resolved")


def incidents_routes(manager: IncidentManager,
                     open_at: Callable[[float], list[dict[str, Any]]] | None = None,
                     clock: Callable[[], float] | None = None) -> list[Route]:
    """``open_at(t)``: the incidents open at ``t`` (``incidents_open_at``, read under the
    service's lock), for ``?at=``; ``clock``: now, to refuse a moment in the future."""

    async def incidents(request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            return JSONResponse(
                {"error": f"unknown status {status!r}: use status=open or status=resolved, "
                          f"or leave it out for both"}, status_code=400)
        raw_at = request.query_params.get("at")
        if raw_at is not None and open_at is not None:
            try:
                at = parse_at(raw_at)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            now = clock() if clock is not None else time.time()
            if at > now:
                return JSONResponse({"error": f"at={at:.3f} is in the future (now is "
                                              f"{now:.3f})"}, status_code=400)
            if status == "resolved":
                return JSONResponse({"error": "with at=, the incidents listed are those open "
                                              "then (status_now says what became of them): "
                                              "leave status out, or use status=open"},
                                    status_code=400)
            listed = await run_in_threadpool(open_at, at)
            return JSONResponse({"at": at, "incidents": listed[:MAX_LISTED]})
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
