"""Plotly figures for the service page, pure functions of ``GET /api/services/{name}``.

One figure, three stacked panels sharing the time axis (rate, error ratio, p95), with a
vertical marker at each version's ``first_seen`` (a deploy). ``uirevision`` is the service
name, so the user's zoom survives refreshes and resets only on another service.
Plotly renders a subset of HTML in titles and annotations, so telemetry text is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.text import plotly_text

PANELS = (
    ("rate_rps", "requests / s", "#1c7ed6"),
    ("error_ratio", "error %", "#e03131"),
    ("p95_ms", "p95 ms", "#f59f00"),
)
DEPLOY_COLOR = "#7048e8"


def _ts(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC)


def service_figure(service: Mapping[str, Any] | None) -> go.Figure:
    """The service's time series, or an empty figure that says why there is nothing."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[label for _, label, _ in PANELS],
    )
    name = str((service or {}).get("name", ""))
    fig.update_layout(
        uirevision=name,
        height=560,
        margin={"l": 50, "r": 20, "t": 40, "b": 30},
        showlegend=False,
        template="plotly_white",
    )
    series = [p for p in (service or {}).get("series", []) or [] if isinstance(p, Mapping)]
    series = [p for p in series if isinstance(p.get("t"), int | float)]
    if not series:
        fig.add_annotation(
            text="no traffic seen in this window yet",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
        return fig
    series.sort(key=lambda p: p["t"])
    xs = [_ts(p["t"]) for p in series]
    for row, (key, label, color) in enumerate(PANELS, start=1):
        ys: list[float | None] = []
        for p in series:
            v = p.get(key)
            if not isinstance(v, int | float):
                ys.append(None)
            else:
                ys.append(v * 100 if key == "error_ratio" else v)
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name=label, line={"color": color}),
            row=row,
            col=1,
        )
    lo, hi = series[0]["t"], series[-1]["t"]
    for v in deploy_markers(service):
        at = v["first_seen"]
        if not lo <= at <= hi:
            continue
        fig.add_vline(x=_ts(at).timestamp() * 1000, line={"color": DEPLOY_COLOR, "dash": "dot"})
        fig.add_annotation(
            x=_ts(at),
            y=1.0,
            xref="x",
            yref="paper",
            text="deploy " + plotly_text(v["version"]),
            showarrow=False,
            font={"color": DEPLOY_COLOR, "size": 11},
            yanchor="bottom",
        )
    return fig


def deploy_markers(service: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Versions with a numeric ``first_seen``, oldest first (the first one is not a deploy
    if it was there from the start, but it is still marked: the chart shows when it appeared)."""
    out = []
    for v in (service or {}).get("versions", []) or []:
        if isinstance(v, Mapping) and isinstance(v.get("first_seen"), int | float):
            out.append({"version": str(v.get("version", "?")), "first_seen": v["first_seen"]})
    out.sort(key=lambda v: v["first_seen"])
    return out
