"""Teams page (``/teams``): the Conway view (teams as nodes, cross-team calls as edges),
each team's services, on-call and runbook, the orphans and any catalog errors."""

from __future__ import annotations

from typing import Any

import dash
import dash_cytoscape as cyto
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from dashboard import elements as E
from dashboard import views
from dashboard.app import collector_client, settings
from dashboard.client import ApiError
from dashboard.text import display_text

dash.register_page(__name__, path="/teams", name="Teams", title="Conway · teams")

TEAMS_LAYOUT: dict[str, Any] = {"name": "preset", "fit": True, "padding": 40, "animate": False}


def layout(**_query: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Teams: who calls whom", className="page-title"),
            html.Div(id="teams-error"),
            dcc.Store(id="teams-fitted", data=False),
            cyto.Cytoscape(
                id="teams-graph",
                elements=[],
                layout=TEAMS_LAYOUT,
                stylesheet=E.teammap_stylesheet(),
                autoRefreshLayout=False,
                style={"width": "100%", "height": "420px"},
            ),
            dcc.Loading(html.Div(id="teams-list", className="cards")),
        ]
    )


def catalog_error_text(error: object) -> str:
    """One catalog error as a line: where (file, line, document, field) and what."""
    if not isinstance(error, dict):
        return display_text(error)
    where = str(error.get("file") or "catalog")
    if error.get("line") is not None:
        where += f":{error['line']}"
    if error.get("document") is not None:
        where += f" (document {error['document']})"
    if error.get("field"):
        where += f" {error['field']}"
    return display_text(f"{where}: {error.get('message') or 'invalid'}")


def teams_list(teams: dict[str, Any]) -> list[Component]:
    """One card per team (services, on-call, channel, runbook), orphans, catalog errors."""
    cards: list[Component] = []
    for t in sorted(teams.get("teams", []) or [], key=lambda t: str(t.get("name"))):
        services = [str(s) for s in t.get("services", []) or []]
        cards.append(
            html.Div(
                [
                    html.H3(views.team_link(t.get("name"), t.get("display_name"))),
                    html.Div(f"on-call {display_text(t.get('on_call') or 'unknown')}"),
                    html.Div(f"channel {display_text(t.get('channel') or 'unknown')}"),
                    html.Div(views.runbook_link(t.get("runbook"))),
                    html.Ul([html.Li(views.service_link(s)) for s in sorted(services)])
                    if services
                    else html.Div("no services", className="muted"),
                ],
                className="card team-card",
            )
        )
    orphans = sorted(str(s) for s in teams.get("orphans", []) or [])
    cards.append(
        html.Div(
            [
                html.H3("Orphans (no owning team)", className="orphan-text"),
                html.Ul([html.Li(views.service_link(s)) for s in orphans])
                if orphans
                else html.Div("none: every service has an owner", className="muted"),
            ],
            className="card orphan-card",
        )
    )
    raw = teams.get("catalog")
    catalog: dict[str, Any] = raw if isinstance(raw, dict) else {}
    errors = [catalog_error_text(e) for e in catalog.get("errors", []) or []]
    if errors:
        cards.append(
            html.Div(
                [
                    html.H3(f"Catalog errors ({len(errors)})"),
                    html.Div(f"in {display_text(catalog.get('path') or 'the catalog')}",
                             className="muted"),
                    html.Ul([html.Li(e) for e in errors]),
                ],
                className="card error-card",
            )
        )
    return cards


@dash.callback(
    Output("teams-graph", "elements"),
    Output("teams-list", "children"),
    Output("teams-error", "children"),
    Output("teams-graph", "layout"),
    Output("teams-fitted", "data"),
    Input("refresh", "n_intervals"),
    Input("teams-graph", "id"),
    State("teams-fitted", "data"),
)
def refresh_teams(_n: int | None, _id: str, fitted: bool | None) -> Any:
    messages: list[Component] = []
    elements: Any = dash.no_update
    cards: Any = dash.no_update
    with collector_client() as client:
        try:
            elements = E.build_teammap_elements(client.teammap(settings().window_s))
        except ApiError as exc:
            messages.append(views.error_box(str(exc)))
        try:
            cards = teams_list(client.teams())
        except ApiError as exc:
            messages.append(views.error_box(str(exc)))
    # Fit once, when the first teams arrive; afterwards the user's zoom is left alone.
    if elements and elements is not dash.no_update and not fitted:
        return elements, cards, messages, {**TEAMS_LAYOUT, "fitRequest": 1}, True
    return elements, cards, messages, dash.no_update, dash.no_update
