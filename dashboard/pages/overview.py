"""Overview: the live call graph, services drawn inside their team's box.

The Cytoscape component is created once per visit; refreshes only replace its ``elements``
(positions are preset and stable), so zoom, pan and selection survive. A view store keeps
the user's choices: selected element, expanded groups (large graphs), searched service and
a fit request counter.
"""

from __future__ import annotations

import time
from typing import Any

import dash
import dash_cytoscape as cyto
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from dashboard import elements as E
from dashboard import timetravel, views
from dashboard.state import browser_state, fetch_moment, is_stale, next_state, wire_graph
from dashboard.text import clock, display_text

dash.register_page(__name__, path="/", name="Overview", title="Conway · overview")

FIT_LAYOUT: dict[str, Any] = {"name": "preset", "fit": True, "padding": 30, "animate": False}


def initial_view() -> dict[str, Any]:
    return {"selected": None, "expanded": [], "focus": None, "fit": 0}


def first_render(at: float | None = None) -> tuple[Any, ...] | None:
    """The overview as a first refresh would draw it, or None if the source did not answer;
    ``at``: the past moment of a ``?at=`` link (refused, outside the history: live).

    Drawn into the page's layout, so the first picture needs no callback round trip after
    the page's own: the refresh's state and ``update_graph`` follow with the same positions
    (``positions.assign`` is deterministic) and only replace what changed.
    """
    from dashboard.app import collector_client, settings, shared_fetches

    s = settings()
    with collector_client() as client:
        fetched, shown, refusal = fetch_moment(client, s.window_s, at, None, shared_fetches())
    if fetched.error is not None:
        return None
    state = next_state(None, fetched, s.source_url, time.time(), s.source_label, at=shown,
                       refused=(at, refusal) if at is not None and refusal is not None
                       else None)
    return (*render(state, initial_view(), None), state["graph"].get("generated_at"),
            {"wire": wire_graph(state["graph"]), "state": browser_state(state)})


def layout(at: str | None = None, **_query: Any) -> html.Div:
    first = first_render(timetravel.parse_at(at))
    elements, sheet, details, info, placeholder, wrap, note, drawn, seed = first or (
        [], E.stylesheet(), None, "", {"display": "flex"},
        "graph-wrap", "", None, None)
    return html.Div(
        [
            dcc.Store(id="ov-view", data=initial_view()),
            # The snapshot the layout drew (``generated_at``): the first refresh, fetched at
            # the same moment, usually brings the same one and need not be drawn again; an
            # older graph store (from before this visit) is not drawn over it.
            dcc.Store(id="ov-drawn", data=drawn),
            # The prerendered graph was fitted by the initial layout: fit request 0 is done.
            dcc.Store(id="ov-fitted", data=0 if elements else None),
            # Where the whole graph was when a search focused one service (browser only).
            dcc.Store(id="ov-back-to", data=None),
            # The graph the layout drew, with its state, as the graph and state stores would
            # hold them: a search or a tap right after the first picture answers at once
            # instead of waiting for the first refresh's round trip (measured at 1,238
            # services: typed as the graph appeared, 0.6-0.8 s to the focused view, of
            # which the wait was the most). ``ov-seeded``: what seeding it outputs (nothing).
            dcc.Store(id="ov-first", data=seed),
            dcc.Store(id="ov-seeded", data=None),
            timetravel.controls(at),  # ?at= and the time bar (dashboard/timetravel.py)
            html.Div(
                [
                    dcc.Input(
                        id="ov-search",
                        type="text",
                        placeholder="find a service…",
                        debounce=False,
                        list="ov-suggest",
                        autoComplete="off",
                        className="search",
                    ),
                    html.Datalist(id="ov-suggest", children=[]),
                    html.Button("Back to whole graph", id="ov-back", n_clicks=0,
                                style={"display": "none"}),
                    html.Button("Fit to view", id="ov-fit", n_clicks=0),
                    html.Button("Show all", id="ov-clear", n_clicks=0),
                    html.Span(id="ov-search-msg", className="search-msg"),
                    html.Span(info, id="ov-info", className="muted"),
                    html.Span(note, id="ov-hidden", className="muted"),
                ],
                className="toolbar",
            ),
            html.Div(
                [
                    cyto.Cytoscape(
                        id="ov-graph",
                        elements=elements,
                        layout=FIT_LAYOUT,
                        stylesheet=sheet,
                        autoRefreshLayout=False,
                        minZoom=0.02,
                        maxZoom=4,
                        boxSelectionEnabled=False,
                        style={"width": "100%", "height": "68vh"},
                    ),
                    html.Div(
                        "Waiting for the collector…", id="ov-placeholder",
                        className="placeholder", style=placeholder,
                    ),
                ],
                id="ov-graph-wrap",
                className=wrap,
            ),
            html.Div(
                [html.Div(details, id="ov-details", className="card details-card"),
                 views.legend()],
                className="below-graph",
            ),
        ]
    )


def render(
    state: dict[str, Any] | None,
    view: dict[str, Any] | None,
    highlight: dict[str, Any] | None,
    *,
    elements: bool = True,
) -> tuple[list[E.Element], list[dict[str, Any]], Any, str, dict[str, str], str, str]:
    """Elements, stylesheet, details panel, info line, placeholder style, wrapper class, and
    what the folded view leaves out (``hidden_note``). ``elements=False``: all but the
    elements (``[]``) and that note, which the browser makes itself from the graph store
    after the first picture (``assets/graph.js``, the same elements)."""
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
    els, hidden = E.build_view(
        graph,
        (state or {}).get("positions") or {"groups": {}, "members": {}},
        expanded=expanded,
        focus=view.get("focus"),
        selected=view.get("selected"),
        highlight=highlight,
        team_names=(state or {}).get("team_names") or {},
    ) if elements else ([], 0)
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
        els,
        E.stylesheet(stale=stale),
        views.details_panel(graph, view.get("selected"), (state or {}).get("team_names") or {}),
        info,
        placeholder,
        wrap_class,
        hidden_note(hidden),
    )


def hidden_note(hidden: int) -> str:
    """What the folded view leaves out (``elements.FOLDED_EDGE_LIMIT``); graph.js says the
    same after each redraw."""
    return (f"{hidden:,} quieter calls between folded teams not drawn (open a team to see its "
            "calls)" if hidden > 0 else "")


@dash.callback(
    Output("ov-graph", "stylesheet"),
    Output("ov-details", "children"),
    Output("ov-info", "children"),
    Output("ov-placeholder", "style"),
    Output("ov-graph-wrap", "className"),
    Output("ov-graph", "layout"),
    Output("ov-fitted", "data"),
    Input("state-key", "data"),
    Input("ov-view", "data"),
    Input("highlight", "data"),
    State("ov-fitted", "data"),
    State("ov-graph-wrap", "className"),
)
def update_graph(
    key: str | None,
    view: dict[str, Any] | None,
    highlight: dict[str, Any] | None,
    fitted: int | None,
    wrap: str | None,
) -> tuple[Any, ...]:
    """Everything around the graph's elements (which the browser draws: ``draw`` below)."""
    # The state by its key, not uploaded: at 1,238 services it is a megabyte per request.
    from dashboard.app import recent_states

    out = graph_outputs(recent_states().get(key), view, highlight, fitted)
    if out[4] == wrap:
        # A new stylesheet makes Cytoscape restyle every element (about a second at 5,000
        # services): sent only when it changes, with the wrapper's class (stale or not).
        return (no_update, *out[1:])
    return out


# Every refresh, tap and highlight is drawn in the browser from the graph store
# (assets/graph.js buildElements, the same elements as elements.build_elements).
dash.clientside_callback(
    ClientsideFunction("conway", "draw"),
    Output("ov-graph", "elements"),
    Output("ov-hidden", "children"),
    Input("graph", "data"),
    Input("state", "data"),
    Input("ov-view", "data"),
    Input("highlight", "data"),
    State("ov-drawn", "data"),
)


def graph_outputs(
    state: dict[str, Any] | None,
    view: dict[str, Any] | None,
    highlight: dict[str, Any] | None,
    fitted: int | None,
) -> tuple[Any, ...]:
    """What one refresh or view change changes around the elements: ``render``'s outputs but
    the elements, the layout (a fit only when asked) and the fit request done."""
    if not (state or {}).get("graph"):
        # No graph yet (the first refresh is on its way): keep what the layout drew.
        return (no_update,) * 7
    out = render(state, view, highlight, elements=False)[1:6]
    want = int((view or {}).get("fit", 0))
    # Fit once when the first graph arrives, then only when the user asked for it.
    if fitted is None or fitted != want:
        return (*out, {**FIT_LAYOUT, "fitRequest": want}, want)
    return (*out, no_update, no_update)


# A tap answers in the browser (assets/graph.js onTap, the same as ``elements.on_tap``):
# opening a folded team is drawn at once.
dash.clientside_callback(
    ClientsideFunction("conway", "tap"),
    Output("ov-view", "data", allow_duplicate=True),
    Input("ov-graph", "tapNodeData"),
    Input("ov-graph", "tapEdgeData"),
    State("ov-view", "data"),
    prevent_initial_call=True,
)


@dash.callback(
    Output("ov-view", "data", allow_duplicate=True),
    Output("ov-search-msg", "children", allow_duplicate=True),
    Output("ov-back-to", "data", allow_duplicate=True),
    Input("ov-fit", "n_clicks"),
    Input("ov-clear", "n_clicks"),
    State("ov-view", "data"),
    prevent_initial_call=True,
)
def toolbar(_fit: int | None, _clear: int | None, view: dict[str, Any] | None
            ) -> tuple[Any, Any, Any]:
    trigger = ctx.triggered_id
    view = dict(view or initial_view())
    if trigger == "ov-fit":
        view["fit"] = int(view.get("fit", 0)) + 1
        return view, no_update, no_update
    fresh = initial_view()
    fresh["fit"] = int(view.get("fit", 0)) + 1
    return fresh, "", None


# Search answers in the browser (dashboard/assets/search.js): the graph is already there, in
# the graph store, so suggestions and the focused view need no round trip, and they do not
# take that store as an input (a callback whose input a refresh in flight will change waits
# for it). The new view goes to ``ov-view`` too, so refreshes keep the focus.
dash.clientside_callback(
    ClientsideFunction("conway", "seedFirst"),  # the layout's graph, until the first refresh
    Output("ov-seeded", "data"),
    Input("ov-first", "data"),
)
dash.clientside_callback(
    ClientsideFunction("conway", "suggest"),
    Output("ov-suggest", "children"),
    Input("ov-search", "value"),
    prevent_initial_call=True,
)
dash.clientside_callback(
    ClientsideFunction("conway", "suggestPending"),  # typed before the first graph came
    Output("ov-suggest", "children", allow_duplicate=True),
    Input("graph", "data"),
    State("state", "data"),
    State("ov-search", "value"),
    prevent_initial_call=True,
)
dash.clientside_callback(
    ClientsideFunction("conway", "focus"),
    Output("ov-view", "data", allow_duplicate=True),
    Output("ov-fitted", "data", allow_duplicate=True),
    Output("ov-back-to", "data"),
    Output("ov-search-msg", "children", allow_duplicate=True),
    Input("ov-search", "n_submit"),
    Input("ov-search", "value"),
    State("ov-view", "data"),
    prevent_initial_call=True,
)
dash.clientside_callback(
    ClientsideFunction("conway", "focusPending"),  # a search made before the first graph
    Output("ov-view", "data", allow_duplicate=True),
    Output("ov-fitted", "data", allow_duplicate=True),
    Output("ov-back-to", "data", allow_duplicate=True),
    Output("ov-search-msg", "children", allow_duplicate=True),
    Input("graph", "data"),
    State("state", "data"),
    State("ov-view", "data"),
    prevent_initial_call=True,
)
dash.clientside_callback(
    ClientsideFunction("conway", "back"),
    Output("ov-view", "data", allow_duplicate=True),
    Output("ov-fitted", "data", allow_duplicate=True),
    Output("ov-back-to", "data", allow_duplicate=True),
    Input("ov-back", "n_clicks"),
    State("ov-view", "data"),
    State("ov-back-to", "data"),
    prevent_initial_call=True,
)
dash.clientside_callback(
    "function (back) { return {display: back ? 'inline-block' : 'none'}; }",
    Output("ov-back", "style"),
    Input("ov-back-to", "data"),
)


@dash.callback(
    Output("highlight", "data", allow_duplicate=True),
    Input("ov-clear", "n_clicks"),
    prevent_initial_call=True,
)
def clear_highlight(n: int | None) -> Any:
    return None if n else no_update
