"""Time travel on the overview: a time control over the retained history and ``?at=`` in the URL.

The moment shown lives in the app-wide ``tt`` store (None: live); the bar reads ``tt-info``
(`bar_info`: the moment fetched, the history range, a refusal), never the whole state. The
overview's layout reads ``?at=`` (epoch seconds or RFC 3339) once per visit into ``tt-init``;
the step buttons, the slider and "Live" move ``tt``; a clientside callback writes it back to
the address bar with ``history.replaceState`` (so a reload or a shared link opens the same
moment, and the page is not re-rendered by Dash's router, which would reset zoom and pan).
The refresh callback (`dashboard.app.refresh`) reads ``tt``: in the past it fetches
``/api/graph?at=`` once per moment and then leaves the graph still; the banner shows the
incidents open then, marked as history. Only the overview travels: on other pages the
dashboard is live.

``next_at`` (what a control does) and ``marker`` (what the bar says) are pure, for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from dashboard.text import ago, clock, display_text

# Step buttons: (seconds, label).
STEPS: tuple[tuple[int, str], ...] = (
    (-600, "◀ 10 min"), (-60, "◀ 1 min"), (-10, "◀ 10 s"), (10, "10 s ▶"), (60, "1 min ▶"))
# Within this much of the newest moment, the past is "now": the control goes live.
LIVE_EDGE_S = 2.0
DEFAULT_HISTORY_S = 900.0  # the slider's range before the source has said its own
BEFORE_S = 60.0  # "the minute before it started": how far before an incident's start


def parse_at(raw: object) -> float | None:
    """``?at=`` as epoch seconds: a number or an RFC 3339 time with an offset; None for
    anything else (a bad link opens the live graph)."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                return None
            value = parsed.timestamp()
    else:
        return None
    return value if math.isfinite(value) and value > 0 else None


def bounds(history: Mapping[str, Any] | None, now: float) -> tuple[float, float]:
    """(earliest, newest) moment the control may show."""
    h = history or {}
    newest = h.get("to")
    newest = float(newest) if isinstance(newest, int | float) else now
    earliest = h.get("earliest_at", h.get("from"))
    earliest = float(earliest) if isinstance(earliest, int | float) \
        else newest - DEFAULT_HISTORY_S
    return min(earliest, newest), newest


def next_at(current: float | None, trigger: object, value: object,
            history: Mapping[str, Any] | None, now: float) -> float | None:
    """The moment to show after a control: ``trigger`` is "tt-live", "tt-slider" (``value``
    the moment its position names) or a step (``{"type": "tt-step", "index": seconds}``).
    Clamped to the history; at (or within ``LIVE_EDGE_S`` of) the newest moment it is live
    (None)."""
    earliest, newest = bounds(history, now)
    if trigger == "tt-live":
        return None
    if trigger == "tt-slider":
        if not isinstance(value, int | float):
            return current
        target = float(value)
    elif isinstance(trigger, Mapping) and trigger.get("type") == "tt-step":
        step = trigger.get("index")
        if not isinstance(step, int | float):
            return current
        target = (newest if current is None else current) + float(step)
    else:
        return current
    if target >= newest - LIVE_EDGE_S:
        return None
    # Whole seconds: the moment the bar shows is the one a link or a reload opens.
    return float(max(math.ceil(earliest), round(target)))


def marker(at: float | None, history: Mapping[str, Any] | None, now: float,
           source: str = "Collector") -> str:
    """What the bar says: the moment shown and how long ago, or live and how far back."""
    earliest, newest = bounds(history, now)
    if at is None:
        span = max(0.0, newest - earliest)
        back = (f"{span / 86_400:.1f} days" if span >= 2 * 86_400 else
                f"{span / 3600:.1f} h" if span >= 90 * 60 else
                f"{span / 60:.0f} min" if span >= 90 else f"{span:.0f} s")
        return f"Live · history back to {when(earliest, now)} ({back})"
    return (f"Viewing {when(at, now)} — {ago(at, now)} · the graph and incidents as they were "
            f"then; press Live to return")


def when(t: float, now: float) -> str:
    """The clock time of ``t``, with its day when it is more than 20 h before ``now`` (the
    archive reaches back days)."""
    if now - t < 20 * 3600:
        return clock(t)
    return time.strftime("%a %d %b %H:%M:%S", time.localtime(t))


def archived_note(archived: object, now: float) -> str:
    """What the bar adds when the moment came from the collector's archive (older than its
    retained statistics, ``collector.archive``): which minute it shows."""
    if not isinstance(archived, Mapping):
        return ""
    end, window = archived.get("at"), archived.get("window_s")
    if not isinstance(end, int | float) or not isinstance(window, int | float):
        return ""
    return (f" · from the archive: the {window:g} s ending {when(float(end), now)} (older "
            f"than the retained statistics)")


def controls(at_param: object = None) -> html.Div:
    """The time bar for the overview's layout, opened at ``?at=`` (``at_param``)."""
    at = parse_at(at_param)
    return html.Div(
        [
            dcc.Store(id="tt-init", data=at),
            html.Span("Time", className="tt-label"),
            *[html.Button(label, id={"type": "tt-step", "index": step}, n_clicks=0,
                          className="tt-step", title=f"{'back' if step < 0 else 'forward'} "
                                                     f"{abs(step)} s")
              for step, label in STEPS[:3]],
            html.Div(
                dcc.Slider(id="tt-slider", min=-int(DEFAULT_HISTORY_S), max=0, step=1, value=0,
                           marks=None, updatemode="mouseup", included=False),
                className="tt-slider"),
            *[html.Button(label, id={"type": "tt-step", "index": step}, n_clicks=0,
                          className="tt-step", title=f"forward {step} s")
              for step, label in STEPS[3:]],
            html.Button("Live", id="tt-live", n_clicks=0, className="tt-live"),
            html.Span(id="tt-marker", className="tt-marker"),
        ],
        id="tt-bar",
        className="tt-bar",
    )


@dash.callback(
    Output("tt", "data"),
    Output("tt-slider", "value"),
    Input("tt-init", "data"),
    Input({"type": "tt-step", "index": ALL}, "n_clicks"),
    Input("tt-slider", "value"),
    Input("tt-live", "n_clicks"),
    State("tt", "data"),
    State("tt-info", "data"),
)
def travel(init: float | None, _steps: list[int | None], slider: float | None,
           _live: int | None, current: float | None,
           state: dict[str, Any] | None) -> tuple[Any, Any]:
    """The moment to show, and the slider's position for it (seconds before the newest
    moment the source answered: while in the past nothing is fetched, so it stays put)."""
    trigger = ctx.triggered_id
    history = (state or {}).get("history")
    now = time.time()
    if trigger is None or trigger == "tt-init":
        found = init  # a visit opens at its ?at= (or live)
    else:
        value = None
        if trigger == "tt-slider" and isinstance(slider, int | float):
            value = bounds(history, now)[1] + float(slider)
        found = next_at(current, trigger, value, history, now)
    position = 0 if found is None else round(found - bounds(history, now)[1])
    if found == current:
        # Unchanged: no refetch. (On a page's first call too: writing the same moment again
        # made a second refresh at load, and Dash drops a superseded request's answer, so the
        # graph store came a refresh later and a search or tap made at once waited for it.)
        return no_update, position
    return found, position


@dash.callback(
    Output("tt-slider", "min"),
    Output("tt-marker", "children"),
    Output("tt-bar", "className"),
    Output("tt-live", "disabled"),
    Input("tt", "data"),
    Input("tt-info", "data"),
    Input("refresh", "n_intervals"),
)
def bar(at: float | None, state: dict[str, Any] | None, _n: int | None) -> tuple[Any, ...]:
    """The slider's range (seconds back from the newest moment), what the bar says, and how
    it looks: plainly marked while in the past. ``state``: its `bar_info`."""
    now = time.time()
    history = (state or {}).get("history")
    earliest, newest = bounds(history, now)
    text = marker(at, history, now, str((state or {}).get("source") or "Collector"))
    refused = (state or {}).get("at_refused") or {}
    if at is not None and refused.get("at") == at:
        return (-math.floor(newest - earliest),
                f"Cannot show {clock(at)}: {refused.get('error')} — showing live instead",
                "tt-bar refused", False)
    if at is not None and (state or {}).get("at") != at:
        text = f"Loading {clock(at)}…"
    elif at is not None:
        text += archived_note((state or {}).get("archived"), now)
    return (-math.floor(newest - earliest), text, "tt-bar past" if at is not None else "tt-bar",
            at is None)


# The address bar follows the moment shown, without a navigation Dash's router would act on.
dash.clientside_callback(
    ClientsideFunction(namespace="timetravel", function_name="url"),
    Output("tt-url-sync", "data"),
    Input("tt", "data"),
    prevent_initial_call=True,  # the address bar is right until a visit sets the moment
)


def url_for(at: float | None) -> str:
    """The overview's deep link for a moment (what the address bar shows, as the
    clientside ``timetravel.url`` writes it)."""
    return "/" if at is None else f"/?at={round(at)}"


def bar_info(state: Mapping[str, Any]) -> dict[str, Any]:
    """What the bar and the controls read of the dashboard's state (``tt-info``), so they do
    not upload the whole graph on every refresh and click."""
    return {k: state.get(k) for k in ("at", "history", "at_refused", "source", "archived")}


def compare_links(incidents: list[Any]) -> html.Div | None:
    """Under the who-to-page banner: for each open incident, a link to the overview at the
    minute before it started (``BEFORE_S``), to compare with now."""
    links: list[Any] = []
    for inc in incidents[:3]:
        started = inc.get("started_at") if isinstance(inc, Mapping) else None
        if not isinstance(started, int | float) or isinstance(started, bool):
            continue
        root = (inc.get("root_cause") or {}).get("service")
        at = math.floor(float(started) - BEFORE_S)
        if links:
            links.append(" · ")
        links.append(dcc.Link(f"the minute before {display_text(root)} started "
                              f"({clock(at)})", href=url_for(at), className="tt-before"))
    if not links:
        return None
    return html.Div(["Compare with ", *links], id="tt-compare",
                     className="banner banner-page banner-detail")


def past_banner(at: float, incidents: list[Any], now: float) -> html.Div:
    """The line above the who-to-page banner while the overview shows the past."""
    if incidents:
        text = (f"History: incidents open at {clock(at)} ({ago(at, now)}), not now. "
                f"Press Live on the overview for now.")
    else:
        text = f"History: no incident was open at {clock(at)} ({ago(at, now)})."
    return html.Div(text, id="history-banner", className="banner banner-history")
