"""One team's page (``/teams/<name>``): services, on-call, channel, runbook, calls in and
out of the team, and drift between declared and observed dependencies."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import dash
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from dashboard import views
from dashboard.app import collector_client, settings
from dashboard.client import ApiError
from dashboard.text import display_text

dash.register_page(__name__, path_template="/teams/<name>", name="Team", title="Conway · team")


def layout(name: str | None = None, **_query: Any) -> html.Div:
    team = unquote(name or "")
    return html.Div(
        [
            dcc.Store(id="team-name", data=team),
            html.H2(["Team ", html.Span(display_text(team), className="team-name")],
                    className="page-title"),
            html.Div(html.Span("Loading…", className="muted"), id="team-body"),
        ]
    )


def _pairs(title: str, pairs: list[dict[str, Any]], empty: str) -> html.Div:
    return html.Div(
        [
            html.H4(title),
            html.Ul(
                [
                    html.Li([views.service_link(p.get("source")), " → ",
                             views.service_link(p.get("target"))])
                    for p in pairs
                ]
            )
            if pairs
            else html.Div(empty, className="muted"),
        ]
    )


def team_body(team: dict[str, Any]) -> list[Component]:
    services = team.get("services", []) or []
    drift = team.get("drift") or {}
    return [
        html.Div(
            [
                html.H3(display_text(team.get("display_name") or team.get("name"))),
                html.Div(f"on-call {display_text(team.get('on_call') or 'unknown')}"),
                html.Div(f"channel {display_text(team.get('channel') or 'unknown')}"),
                html.Div(f"email {display_text(team.get('email') or 'unknown')}"),
                html.Div(views.runbook_link(team.get("runbook"))),
            ],
            className="card",
        ),
        html.Div(
            [
                html.H3("Services"),
                html.Table(
                    [html.Tr([html.Th("service"), html.Th("health"), html.Th("owner from")])]
                    + [
                        html.Tr(
                            [
                                html.Td(views.service_link(s.get("name"))),
                                html.Td(views.health_badge(s.get("health"))),
                                html.Td(display_text(s.get("source") or "unknown")),
                            ]
                        )
                        for s in services
                        if isinstance(s, dict)
                    ],
                    className="table",
                ),
            ],
            className="card",
        ),
        views.edges_table("Calls out of the team", team.get("edges_out", []) or []),
        views.edges_table("Calls into the team", team.get("edges_in", []) or []),
        html.Div(
            [
                html.H3("Drift: catalog vs traffic"),
                _pairs("Observed but not declared", drift.get("undeclared", []) or [],
                       "none"),
                _pairs("Declared but not seen", drift.get("unused", []) or [], "none"),
            ],
            className="card",
        ),
    ]


@dash.callback(
    Output("team-body", "children"),
    Input("refresh", "n_intervals"),
    Input("team-name", "data"),
)
def refresh_team(_n: int | None, name: str | None) -> Any:
    if not name:
        return views.error_box("No team named in the address.")
    try:
        with collector_client() as client:
            team = client.team(name, settings().window_s)
    except ApiError as exc:
        if exc.status == 404:
            return views.error_box(
                f"No team named “{name}” in the catalog. The teams page lists them all."
            )
        return views.error_box(str(exc))
    return html.Div(team_body(team), className="cards")
