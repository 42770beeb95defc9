"""Service page (``/services/<name>``): time series with deploy markers, owner, neighbours."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

import dash
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from dashboard import figures, views
from dashboard.app import collector_client, settings
from dashboard.client import ApiError
from dashboard.text import ago, display_text, fmt_ms, fmt_pct, fmt_rate

dash.register_page(
    __name__, path_template="/services/<name>", name="Service", title="Conway · service"
)


def layout(name: str | None = None, **_query: Any) -> html.Div:
    service = unquote(name or "")
    return html.Div(
        [
            dcc.Store(id="svc-name", data=service),
            html.H2(["Service ", html.Span(display_text(service), className="service-name")],
                    className="page-title"),
            html.Div(html.Span("Loading…", className="muted"), id="svc-body"),
            dcc.Graph(id="svc-chart", figure=figures.service_figure(None),
                      config={"displaylogo": False}),
        ]
    )


def service_body(svc: dict[str, Any], now: float) -> list[Component]:
    """The summary line, owner card, callers/callees and versions of one service."""
    summary = html.Div(
        [
            views.health_badge(svc.get("health")),
            html.Span(f" {display_text(svc.get('kind', 'service'))} · team "),
            views.team_link(svc.get("team")),
            html.Span(
                " · " + " · ".join(
                    (
                        fmt_rate(svc.get("rate_rps")),
                        "errors " + fmt_pct(svc.get("error_ratio")),
                        "p50 " + fmt_ms(svc.get("p50_ms")),
                        "p95 " + fmt_ms(svc.get("p95_ms")),
                        "p99 " + fmt_ms(svc.get("p99_ms")),
                    )
                )
            ),
            html.Span(
                {True: " · scrape: up", False: " · scrape: DOWN", None: ""}.get(svc.get("up"), "")
            ),
        ],
        className="summary",
    )
    versions = [v for v in svc.get("versions", []) or [] if isinstance(v, dict)]
    version_card = html.Div(
        [
            html.H3("Versions seen"),
            html.Ul(
                [
                    html.Li(
                        f"{display_text(v.get('version'))}: first seen "
                        f"{ago(v.get('first_seen'), now)}, "
                        f"last seen {ago(v.get('last_seen'), now)}"
                    )
                    for v in versions
                ]
            )
            if versions
            else html.Div(_missing_versions(svc), className="muted"),
        ],
        className="card",
    )
    return [
        summary,
        html.Div(
            [
                views.owner_card(svc.get("owner")),
                views.neighbours_table("Callers", svc.get("callers", []) or []),
                views.neighbours_table("Callees", svc.get("callees", []) or []),
                version_card,
            ],
            className="cards",
        ),
    ]


def _missing_versions(svc: dict[str, Any]) -> str:
    # The Prometheus source says which data its series cannot carry.
    why = (svc.get("unavailable") or {}).get("versions")
    return f"not available from the Prometheus source: {display_text(why)}" if why else (
        "no version attribute seen")


@dash.callback(
    Output("svc-body", "children"),
    Output("svc-chart", "figure"),
    Input("refresh", "n_intervals"),
    Input("svc-name", "data"),
)
def refresh_service(_n: int | None, name: str | None) -> Any:
    if not name:
        return views.error_box("No service named in the address."), dash.no_update
    try:
        with collector_client() as client:
            svc = client.service(name, settings().window_s)
    except ApiError as exc:
        if exc.status == 404:
            return views.error_box(
                f"The collector has not seen a service named “{name}” in the last "
                f"{settings().window_s:.0f} s. Check the name, or wait for traffic."
            ), figures.service_figure(None)
        return views.error_box(str(exc)), dash.no_update
    return service_body(svc, time.time()), figures.service_figure(svc)
