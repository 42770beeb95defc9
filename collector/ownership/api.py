"""HTTP routes of the ownership concern; each computes, in a worker thread, from the shared
read snapshot ``service.read_snapshot(window)`` (never on the event loop).

- ``GET /api/teams[?window=S]`` -> ``{"teams": [{"name","display_name","on_call","channel",
  "runbook","email","services","resources"}], "orphans": [...], "catalog": {"path",
  "loaded_at","entities","errors": [{"file","document","line","field","message"}]},
  "resource_attributes": {"remembered","max_services","dropped"}}``
- ``GET /api/teams/{name}?window=S`` -> one team with its services' health, the service edges
  leaving, entering and inside it, and its catalog drift; 404 for an unknown team.
- ``GET /api/teammap?window=S`` -> ``collector.ownership.teammap.team_map``.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collector.ownership.part import Ownership
from collector.ownership.refs import echo
from collector.service import CollectorService


class BadWindow(ValueError):
    pass


def parse_window(request: Request, service: CollectorService) -> float | None:
    """The ``window`` query parameter; the same rule as ``/api/graph``'s (bucket..retention)."""
    raw = request.query_params.get("window")
    if raw is None or raw == "":
        return None
    low, high = service.config.bucket_s, service.config.retention_s
    try:
        window = float(raw)
    except ValueError:
        window = math.nan
    if not (math.isfinite(window) and low <= window <= high):
        raise BadWindow(f"window must be a number of seconds between {low:g} and {high:g} "
                        f"(the retention), got {echo(raw)}")
    return window


def routes(service: CollectorService, ownership: Ownership) -> list[BaseRoute]:
    async def teams(request: Request) -> Response:
        try:
            window = parse_window(request, service)
        except BadWindow as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        body = await run_in_threadpool(service.cached_json, ("teams", window),
                                       lambda: ownership.teams_payload(
                                           service.read_snapshot(window)))
        return Response(body, media_type="application/json")

    async def team(request: Request) -> Response:
        try:
            window = parse_window(request, service)
        except BadWindow as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        name = request.path_params["name"]

        def body() -> dict[str, Any]:
            snap = service.read_snapshot(window)
            row = ownership.find_team(snap, name)
            if row is None:
                known = ", ".join(ownership.teams(snap)) or "none"
                return {"error": f"unknown team {echo(name)}; known teams: {known}"}
            return ownership.team_payload(snap, row)

        payload = await run_in_threadpool(service.cached_json, ("team", name, window), body)
        return Response(payload, media_type="application/json",
                        status_code=404 if payload.startswith(b'{"error"') else 200)

    async def teammap(request: Request) -> Response:
        try:
            window = parse_window(request, service)
        except BadWindow as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        body = await run_in_threadpool(service.cached_json, ("teammap", window),
                                       lambda: ownership.teammap_payload(
                                           service.read_snapshot(window)))
        return Response(body, media_type="application/json")

    return [
        Route("/api/teams", teams, methods=["GET"]),
        Route("/api/teams/{name:path}", team, methods=["GET"]),
        Route("/api/teammap", teammap, methods=["GET"]),
    ]
