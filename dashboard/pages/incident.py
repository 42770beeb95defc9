"""One incident (``/incidents/<id>``): who to page and who was paged, the timeline from its
history (opened, kind changed, impacted added, paged, verdict moved, resolved), the evidence
with trace ids, the impacted services, and the graph stored with the incident: its root
cause, blast radius and their calls at their worst while it was open, so it is there after a
collector restart and after the traffic has moved on."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import dash
import dash_cytoscape as cyto
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from dashboard import elements as E
from dashboard import views
from dashboard.app import collector_client
from dashboard.client import ApiError
from dashboard.text import ago, clock, display_text

dash.register_page(__name__, path_template="/incidents/<incident_id>", name="Incident",
                   title="Conway · incident")

GRAPH_LAYOUT: dict[str, Any] = {"name": "breadthfirst", "directed": True, "padding": 30,
                                "spacingFactor": 1.3, "animate": False}
EVENT_WORDS = {"opened": "opened", "updated": "updated", "resolved": "resolved",
               "moved": "verdict moved", "paged": "paged"}


def layout(incident_id: str | None = None, **_query: Any) -> html.Div:
    iid = unquote(incident_id or "")
    return html.Div(
        [
            dcc.Store(id="inc-id", data=iid),
            dcc.Store(id="inc-graph-at", data=None),
            html.H2(["Incident ", html.Span(display_text(iid), className="incident-id")],
                    className="page-title"),
            html.Div(dcc.Link("all incidents", href="/incidents"), className="muted"),
            html.Div(html.Span("Loading…", className="muted"), id="inc-body"),
            html.Div(
                [
                    html.H3("The graph when it happened"),
                    html.Div(id="inc-graph-note", className="muted"),
                    cyto.Cytoscape(id="inc-graph", elements=[], layout=GRAPH_LAYOUT,
                                   stylesheet=E.stylesheet(), minZoom=0.1, maxZoom=4,
                                   boxSelectionEnabled=False,
                                   style={"width": "100%", "height": "420px"}),
                ],
                className="card",
            ),
        ]
    )


def _header(inc: Mapping[str, Any], now: float) -> html.Div:
    rc = inc.get("root_cause") or {}
    page = inc.get("page") or {}
    team = page.get("team") or rc.get("team")
    status = str(inc.get("status", "open"))
    lines: list[Component] = [
        html.Div([html.Strong(display_text(rc.get("service") or "?"), className="inc-root"),
                  html.Span(f" · {display_text(rc.get('kind') or '?')} · "),
                  html.Span(display_text(status), className=f"badge status-{status}")],
                 className="banner-line"),
        html.Div([html.Span("Page "), views.team_link(team) if team else html.Strong(
                      display_text(page.get("fallback") or "nobody: no owning team")),
                  html.Span(" · on-call "),
                  html.Strong(display_text(page.get("on_call") or "unknown")),
                  html.Span(" · channel "),
                  html.Span(display_text(page.get("channel") or "unknown")),
                  html.Span(" · "), views.runbook_link(page.get("runbook"))],
                 className="banner-line inc-page"),
    ]
    started, resolved = inc.get("started_at"), inc.get("resolved_at")
    when = (f"opened {clock(float(started))} ({ago(started, now)})"
            if isinstance(started, int | float) else "opened at an unknown time")
    if isinstance(resolved, int | float):
        when += f" · resolved {clock(float(resolved))} ({ago(resolved, now)})"
    conf = inc.get("confidence")
    if isinstance(conf, int | float):
        when += f" · confidence {float(conf) * 100:.0f}%"
    lines.append(html.Div(when, className="banner-line"))
    vc = inc.get("version_change")
    if isinstance(vc, Mapping) and vc:
        lines.append(html.Div(
            f"Version change on {display_text(vc.get('service'))}: "
            f"{display_text(vc.get('from'))} → {display_text(vc.get('to'))} "
            f"({ago(vc.get('at'), now)})", className="banner-line version-change"))
    return html.Div(lines, className="card inc-header")


def _timeline(history: list[Any]) -> html.Div:
    items = [html.Li([html.Span(clock(float(e["at"])) if isinstance(e.get("at"), int | float)
                                else "?", className="tl-at"),
                      html.Strong(" " + EVENT_WORDS.get(str(e.get("event")),
                                                        display_text(e.get("event"))) + " "),
                      html.Span(display_text(e.get("summary") or ""))],
                     className=f"tl-{display_text(e.get('event'))}")
             for e in history if isinstance(e, Mapping)]
    paged = [e for e in history if isinstance(e, Mapping) and e.get("event") == "paged"]
    who = (html.Div([html.Strong("Who was paged: "),
                     html.Span("; ".join(f"{display_text(e.get('summary'))} at "
                                         f"{clock(float(e['at']))}" for e in paged
                                         if isinstance(e.get("at"), int | float)))],
                    className="inc-paged")
           if paged else html.Div("No page sent (the collector has no --alertmanager or "
                                  "--page-webhook, or none was delivered yet).",
                                  className="muted inc-paged"))
    return html.Div([html.H3("Timeline"), who, html.Ol(items, id="inc-timeline")],
                    className="card")


def _evidence(inc: Mapping[str, Any]) -> html.Div:
    ev = (inc.get("root_cause") or {}).get("evidence") or {}
    if not isinstance(ev, Mapping):
        ev = {"summary": str(ev)}
    parts: list[Component] = [html.H3("Evidence"),
                              html.Div(display_text(ev.get("summary") or "none"),
                                       className="inc-evidence")]
    traces = [str(t) for t in ev.get("trace_ids") or []]
    if traces:
        parts.append(html.Div([html.Span("Example traces: "),
                               html.Code(", ".join(display_text(t) for t in traces[:10]),
                                         className="inc-traces")]))
    counts = ev.get("counts")
    if isinstance(counts, Mapping) and counts:
        parts.append(html.Table([html.Tr([html.Th(display_text(k)), html.Td(display_text(v))])
                                 for k, v in counts.items()], className="table"))
    return html.Div(parts, className="card")


def _impacted(inc: Mapping[str, Any]) -> html.Div:
    rows = [x for x in inc.get("impacted") or [] if isinstance(x, Mapping)]
    if not rows:
        return html.Div([html.H3("Impacted"), html.Div("none found", className="muted")],
                        className="card")
    table = [html.Tr([html.Th(h) for h in ("service", "team", "how found", "affected",
                                           "explained", "evidence")])]
    for x in rows:
        table.append(html.Tr([
            html.Td(views.service_link(x.get("service"))),
            html.Td(views.team_link(x.get("team")) if x.get("team") else "no team"),
            html.Td(display_text(x.get("how") or "")),
            html.Td(display_text(x.get("affected") if x.get("affected") is not None else "")),
            html.Td(display_text(x.get("explained") if x.get("explained") is not None else "")),
            html.Td(display_text(x.get("summary") or "")),
        ]))
    return html.Div([html.H3("Impacted"), html.Table(table, className="table inc-impacted")],
                    className="card")


@dash.callback(
    Output("inc-body", "children"),
    Output("inc-graph", "elements"),
    Output("inc-graph-note", "children"),
    Output("inc-graph-at", "data"),
    Input("refresh", "n_intervals"),
    Input("inc-id", "data"),
    State("inc-graph-at", "data"),
)
def refresh_incident(_n: int | None, iid: str | None, shown_at: Any) -> Any:
    if not iid:
        return views.error_box("No incident named in the address."), [], "", None
    try:
        with collector_client() as client:
            inc = client.incident(iid)
    except ApiError as exc:
        if exc.status == 404:
            return (views.error_box(f"No incident “{iid}”. {exc}"), [], "", None)
        return views.error_box(str(exc)), no_update, no_update, no_update
    now = time.time()
    body = html.Div([_header(inc, now), _timeline(list(inc.get("history") or [])),
                     _evidence(inc), _impacted(inc)], className="cards")
    graph = inc.get("graph")
    if not isinstance(graph, Mapping) or not graph.get("nodes"):
        return body, [], "No graph was stored with this incident.", None
    at = graph.get("updated_at")
    note = (f"Stored with the incident: captured {clock(float(graph['captured_at']))}, "
            f"worst numbers while open, last {clock(float(at))}"
            if isinstance(graph.get("captured_at"), int | float)
            and isinstance(at, int | float) else "Stored with the incident.")
    if graph.get("left_out"):
        note += f" · {graph['left_out']} more services left out"
    if at == shown_at:  # unchanged: keep the user's zoom and pan
        return body, no_update, note, no_update
    return body, E.incident_elements(graph), note, at
