"""Overview: the live call graph, services drawn inside their team's box.

The Cytoscape component is created once per visit; refreshes only replace its ``elements``
(positions are preset and stable), so zoom, pan and selection survive. A view store keeps
the user's choices: selected element, expanded groups (large graphs), searched service and
a fit request counter.
"""

from __future__ import annotations

from typing import Any

import dash
import dash_cytoscape as cyto
from dash import Input, Output, State, ctx, dcc, html, no_update

from dashboard import elements as E
from dashboard import timetravel, views
from dashboard.state import is_stale
from dashboard.text import clock, display_text

dash.register_page(__name__, path="/", name="Overview", title="Conway · overview")

FIT_LAYOUT: dict[str, Any] = {"name": "preset", "fit": True, "padding": 30, "animate": False}


def initial_view() -> dict[str, Any]:
    return {"selected": None, "expanded": [], "focus": None, "fit": 0}


def layout(at: str | None = None, **_query: Any) -> html.Div:
    return html.Div(
        [
            dcc.Store(id="ov-view", data=initial_view()),
            dcc.Store(id="ov-fitted", data=None),
            timetravel.controls(at),  # ?at= and the time bar (dashboard/timetravel.py)
            html.Div(
                [
                    dcc.Input(
                        id="ov-search",
                        type="text",
                        placeholder="find a service…",
                        debounce=True,
                        className="search",
                    ),
                    html.Button("Fit to view", id="ov-fit", n_clicks=0),
                    html.Button("Show all", id="ov-clear", n_clicks=0),
                    html.Span(id="ov-search-msg", className="search-msg"),
                    html.Span(id="ov-info", className="muted"),
                ],
                className="toolbar",
            ),
            html.Div(
                [
                    cyto.Cytoscape(
                        id="ov-graph",
                        elements=[],
                        layout=FIT_LAYOUT,
                        stylesheet=E.stylesheet(),
                        autoRefreshLayout=False,
                        minZoom=0.02,
                        maxZoom=4,
                        boxSelectionEnabled=False,
                        style={"width": "100%", "height": "68vh"},
                    ),
                    html.Div(
                        "Waiting for the collector…", id="ov-placeholder", className="placeholder"
                    ),
                ],
                id="ov-graph-wrap",
                className="graph-wrap",
            ),
            html.Div(
                [html.Div(id="ov-details", className="card details-card"), views.legend()],
                className="below-graph",
            ),
        ]
    )


def render(
    state: dict[str, Any] | None,
    view: dict[str, Any] | None,
    highlight: dict[str, Any] | None,
) -> tuple[list[E.Element], list[dict[str, Any]], Any, str, dict[str, str], str]:
    """Elements, stylesheet, details panel, info line, placeholder style, wrapper class."""
    view = view or initial_view()
    graph = (state or {}).get("graph")
    # The blast-radius highlight lasts while its incident is open.
    open_roots = {
        str((inc.get("root_cause") or {}).get("service"))
        for inc in (state or {}).get("incidents", []) or []
    }
    if highlight and str(highlight.get("root")) not in open_roots:
        highlight = None
    stale = is_stale(state)
    expanded = list(view.get("expanded") or [])
    if highlight and graph:
        # A root cause inside a folded team would be invisible: open its team.
        expanded += E.groups_of(graph, [str(highlight.get("root"))])
    elements = E.build_elements(
        graph,
        (state or {}).get("positions") or {"groups": {}, "members": {}},
        expanded=expanded,
        focus=view.get("focus"),
        selected=view.get("selected"),
        highlight=highlight,
        team_names=(state or {}).get("team_names") or {},
    )
    nodes = len((graph or {}).get("nodes", []))
    edges = len((graph or {}).get("edges", []))
    info = f"{nodes} nodes · {edges} calls"
    if view.get("focus"):
        info += f" · showing {display_text(view['focus'])} and its neighbours"
    elif nodes > E.COLLAPSE_THRESHOLD:
        info += f" · more than {E.COLLAPSE_THRESHOLD} nodes: teams folded, tap one to open it"
    if stale and state:
        info += f" · stale since {clock(float(state['fetched_at']))}"
    if graph is None:
        placeholder = {"display": "flex"}
    else:
        placeholder = {"display": "none"}
    wrap_class = "graph-wrap stale" if stale else "graph-wrap"
    return (
        elements,
        E.stylesheet(stale=stale),
        views.details_panel(graph, view.get("selected"), (state or {}).get("team_names") or {}),
        info,
        placeholder,
        wrap_class,
    )


@dash.callback(
    Output("ov-graph", "elements"),
    Output("ov-graph", "stylesheet"),
    Output("ov-details", "children"),
    Output("ov-info", "children"),
    Output("ov-placeholder", "style"),
    Output("ov-graph-wrap", "className"),
    Output("ov-graph", "layout"),
    Output("ov-fitted", "data"),
    Input("state", "data"),
    Input("ov-view", "data"),
    Input("highlight", "data"),
    State("ov-fitted", "data"),
)
def update_graph(
    state: dict[str, Any] | None,
    view: dict[str, Any] | None,
    highlight: dict[str, Any] | None,
    fitted: int | None,
) -> tuple[Any, ...]:
    out = render(state, view, highlight)
    want = int((view or {}).get("fit", 0))
    # Fit once when the first elements arrive, then only when the user asked for it.
    if out[0] and (fitted is None or fitted != want):
        return (*out, {**FIT_LAYOUT, "fitRequest": want}, want)
    return (*out, no_update, no_update)


def on_tap(
    view: dict[str, Any] | None, node: dict[str, Any] | None, edge: dict[str, Any] | None,
    trigger: str | None,
) -> dict[str, Any]:
    """Select what was tapped; a folded team box opens, an opened one folds."""
    view = dict(view or initial_view())
    data = node if trigger == "tapNodeData" else edge
    if not data:
        return view
    kind = data.get("kind")
    el_id = str(data.get("id"))
    expanded = list(view.get("expanded") or [])
    if kind == "collapsed":
        group = str(data.get("group"))
        if group not in expanded:
            expanded.append(group)
        view["expanded"] = expanded
    elif kind == "group" and str(data.get("group")) in expanded:
        view["expanded"] = [g for g in expanded if g != data.get("group")]
    view["selected"] = el_id
    return view


@dash.callback(
    Output("ov-view", "data", allow_duplicate=True),
    Input("ov-graph", "tapNodeData"),
    Input("ov-graph", "tapEdgeData"),
    State("ov-view", "data"),
    prevent_initial_call=True,
)
def tapped(
    node: dict[str, Any] | None, edge: dict[str, Any] | None, view: dict[str, Any] | None
) -> dict[str, Any]:
    prop = ctx.triggered[0]["prop_id"].split(".")[-1] if ctx.triggered else None
    return on_tap(view, node, edge, prop)


def find_service(graph: dict[str, Any] | None, query: str) -> str | None:
    """Exact name first, then the shortest name containing the query (case-insensitive)."""
    q = query.strip().lower()
    if not q or not graph:
        return None
    names = sorted(str(n.get("id")) for n in graph.get("nodes", []) if n.get("id") is not None)
    for name in names:
        if name.lower() == q:
            return name
    hits = [n for n in names if q in n.lower()]
    return min(hits, key=lambda n: (len(n), n)) if hits else None


def on_search(
    view: dict[str, Any] | None, graph: dict[str, Any] | None, query: str | None
) -> tuple[dict[str, Any], str]:
    view = dict(view or initial_view())
    if not query or not query.strip():
        view["focus"] = None
        view["fit"] = int(view.get("fit", 0)) + 1
        return view, ""
    found = find_service(graph, query)
    if found is None:
        return view, f"no service matches “{display_text(query.strip())}”"
    view["focus"] = found
    view["selected"] = E.node_el_id(found)
    view["fit"] = int(view.get("fit", 0)) + 1
    return view, ""


@dash.callback(
    Output("ov-view", "data", allow_duplicate=True),
    Output("ov-search-msg", "children"),
    Input("ov-search", "value"),
    Input("ov-fit", "n_clicks"),
    Input("ov-clear", "n_clicks"),
    State("ov-view", "data"),
    State("state", "data"),
    prevent_initial_call=True,
)
def toolbar(
    query: str | None,
    _fit: int | None,
    _clear: int | None,
    view: dict[str, Any] | None,
    state: dict[str, Any] | None,
) -> tuple[Any, Any]:
    trigger = ctx.triggered_id
    view = dict(view or initial_view())
    if trigger == "ov-fit":
        view["fit"] = int(view.get("fit", 0)) + 1
        return view, no_update
    if trigger == "ov-clear":
        fresh = initial_view()
        fresh["fit"] = int(view.get("fit", 0)) + 1
        return fresh, ""
    new_view, message = on_search(view, (state or {}).get("graph"), query)
    return new_view, message


@dash.callback(
    Output("highlight", "data", allow_duplicate=True),
    Input("ov-clear", "n_clicks"),
    prevent_initial_call=True,
)
def clear_highlight(n: int | None) -> Any:
    return None if n else no_update
