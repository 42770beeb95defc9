"""Incidents (``/incidents``): open and resolved, newest first, filtered by the team paged
(``?team=payments`` or the selector). Each links to its page (``/incidents/<id>``)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import dash
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from dashboard import views
from dashboard.app import collector_client
from dashboard.client import ApiError
from dashboard.text import ago, clock, display_text

dash.register_page(__name__, path="/incidents", name="Incidents", title="Conway · incidents")

ALL = "__all__"


def layout(team: str | None = None, **_query: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Incidents", className="page-title"),
            html.Div(
                [
                    html.Span("Team paged: "),
                    # The team from the address is an option from the start: a dropdown
                    # drops a value its options lack.
                    dcc.Dropdown(id="incs-team", value=team or ALL, clearable=False,
                                 options=[{"label": "every team", "value": ALL}] + (
                                     [{"label": display_text(team), "value": team}]
                                     if team else []),
                                 style={"width": "18em", "display": "inline-block"}),
                ],
                className="toolbar",
            ),
            html.Div(html.Span("Loading…", className="muted"), id="incs-body"),
        ]
    )


def page_team(inc: dict[str, Any]) -> str | None:
    page = inc.get("page") or {}
    team = page.get("team") or (inc.get("root_cause") or {}).get("team")
    return str(team) if team else None


def incident_href(inc_id: object) -> str:
    return "/incidents/" + quote(str(inc_id), safe="")


def incidents_table(listed: list[dict[str, Any]], now: float) -> Component:
    if not listed:
        return html.Div("No incidents.", className="muted", id="incs-empty")
    rows: list[Component] = [html.Tr([html.Th(h) for h in (
        "opened", "status", "root cause", "kind", "team paged", "impacted", "resolved")])]
    for inc in listed:
        rc = inc.get("root_cause") or {}
        status = str(inc.get("status", "open"))
        team = page_team(inc)
        started = inc.get("started_at")
        resolved = inc.get("resolved_at")
        rows.append(html.Tr(
            [
                html.Td(f"{clock(float(started))} ({ago(started, now)})"
                        if isinstance(started, int | float) else "unknown"),
                html.Td(html.Span(display_text(status), className=f"badge status-{status}")),
                html.Td(dcc.Link(display_text(rc.get("service") or "?"),
                                 href=incident_href(inc.get("id")), className="incident-link")),
                html.Td(display_text(rc.get("kind") or "?")),
                html.Td(views.team_link(team) if team else html.Span(
                    display_text((inc.get("page") or {}).get("fallback") or "nobody"),
                    className="muted")),
                html.Td(str(len(inc.get("impacted") or []))),
                html.Td(ago(resolved, now) if isinstance(resolved, int | float) else ""),
            ],
            className=f"incident-row {status}",
        ))
    return html.Table(rows, className="table incidents-table")


@dash.callback(
    Output("incs-body", "children"),
    Output("incs-team", "options"),
    Input("refresh", "n_intervals"),
    Input("incs-team", "value"),
)
def refresh_incidents(_n: int | None, team: str | None) -> Any:
    try:
        with collector_client() as client:
            listed = client.incident_list()
    except ApiError as exc:
        return views.error_box(str(exc)), dash.no_update
    teams = sorted({t for t in (page_team(i) for i in listed) if t})
    if team and team != ALL and team not in teams:
        teams.append(team)
    options = [{"label": "every team", "value": ALL}] + [
        {"label": display_text(t), "value": t} for t in teams]
    shown = [i for i in listed if not team or team == ALL or page_team(i) == team]
    shown.sort(key=lambda i: float(i.get("started_at") or 0.0), reverse=True)
    return incidents_table(shown, time.time()), options
