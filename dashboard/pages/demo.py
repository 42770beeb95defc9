"""Demo page (``/demo``): inject and clear faults through the demo control API.

Only active when the dashboard was started with ``--demo-admin URL``; the token (from
``--demo-token`` or ``CONWAY_ADMIN_TOKEN``) stays on the server and goes out only in the
``Authorization`` header. The control API's own error messages are shown as they are.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, MATCH, Input, Output, State, ctx, dcc, html, no_update
from dash.development.base_component import Component

from dashboard import views
from dashboard.app import settings
from dashboard.client import ApiError, DemoClient
from dashboard.text import display_text
from demo_services.faults import MAX_CPU_HOG

dash.register_page(__name__, path="/demo", name="Demo", title="Conway · demo controls")


def demo_client() -> DemoClient | None:
    s = settings()
    if not s.demo_admin_url:
        return None
    return DemoClient(s.demo_admin_url, s.demo_token, timeout_s=5.0)


def layout(**_query: Any) -> html.Div:
    if not settings().demo_admin_url:
        return html.Div(
            [
                html.H2("Demo controls", className="page-title"),
                html.P(
                    "Demo controls are off. Start the dashboard with "
                    "--demo-admin http://127.0.0.1:8100 (make demo does this) to inject "
                    "faults into the demo shop from here.",
                    id="demo-off",
                ),
            ]
        )
    return html.Div(
        [
            html.H2("Demo controls", className="page-title"),
            html.Div(
                [
                    html.Button("Reload", id="demo-reload", n_clicks=0),
                    html.Button("Clear all faults", id="demo-clear-all", n_clicks=0),
                    html.Span(id="demo-message", className="demo-message"),
                ],
                className="toolbar",
            ),
            dcc.Loading(html.Div(id="demo-body", className="cards")),
        ]
    )


def fault_body(
    error_rate: float | None,
    latency_ms: Any,
    down: list[str] | None,
    version: str | None,
    cpu_hog: Any = None,
) -> dict[str, Any]:
    """The POST /faults body from the form; values are passed on, the API validates them."""
    body: dict[str, Any] = {
        "error_rate": float(error_rate or 0.0),
        "latency_ms": latency_ms if latency_ms not in (None, "") else 0,
        "down": bool(down and "down" in down),
    }
    if version and version.strip():
        body["version"] = version.strip()
    if cpu_hog not in (None, ""):
        body["cpu_hog"] = cpu_hog
    return body


def target_card(name: str, info: dict[str, Any] | None) -> html.Div:
    fault = (info or {}).get("fault") or {}
    state = (info or {}).get("state", "virtual dependency" if info is None else "?")
    # cpu_hog applies to services only: a virtual dependency's card keeps the input (the
    # callback reads it for every card) but hidden, at 0.
    cpu_hog = html.Div(
        [
            html.Label(f"noisy neighbour: CPU-burning threads (0-{MAX_CPU_HOG})"),
            dcc.Input(
                id={"type": "demo-hog", "index": name},
                type="number",
                min=0,
                max=MAX_CPU_HOG,
                step=1,
                value=fault.get("cpu_hog") or 0,
            ),
        ],
        hidden=info is None,
    )
    return html.Div(
        [
            html.H3([display_text(name), html.Span(f" ({display_text(state)})",
                                                     className="muted")]),
            html.Label("error rate"),
            dcc.Slider(
                id={"type": "demo-err", "index": name},
                min=0,
                max=1,
                step=0.05,
                value=float(fault.get("error_rate") or 0.0),
                marks={0: "0", 0.5: "50%", 1: "100%"},
                tooltip={"placement": "bottom"},
            ),
            html.Label("extra latency (ms)"),
            dcc.Input(
                id={"type": "demo-lat", "index": name},
                type="number",
                value=fault.get("latency_ms") or 0,
            ),
            dcc.Checklist(
                id={"type": "demo-down", "index": name},
                options=[{"label": " down", "value": "down"}],
                value=["down"] if fault.get("down") else [],
            ),
            html.Label("bad deploy version"),
            dcc.Input(
                id={"type": "demo-ver", "index": name},
                type="text",
                value=fault.get("version") or "",
                placeholder="e.g. 2.0.0-bad",
            ),
            cpu_hog,
            html.Div(
                [
                    html.Button("Apply", id={"type": "demo-apply", "index": name}, n_clicks=0),
                    html.Button("Clear", id={"type": "demo-clear", "index": name}, n_clicks=0),
                ],
                className="buttons",
            ),
            html.Div(id={"type": "demo-status", "index": name}, className="demo-status"),
        ],
        className="card demo-card",
    )


def demo_cards(listing: dict[str, Any]) -> list[Component]:
    services = [s for s in listing.get("services", []) or [] if isinstance(s, dict)]
    cards: list[Component] = [target_card(str(s.get("name")), s) for s in services]
    cards += [target_card(str(v), None) for v in listing.get("virtual", []) or []]
    return cards


@dash.callback(
    Output("demo-body", "children"),
    Input("demo-reload", "n_clicks"),
)
def load(_n: int | None) -> Any:
    client = demo_client()
    if client is None:
        return views.error_box("Demo controls are off (no --demo-admin).")
    with client:
        try:
            return demo_cards(client.services())
        except ApiError as exc:
            return views.error_box(str(exc))


@dash.callback(
    Output({"type": "demo-status", "index": MATCH}, "children"),
    Input({"type": "demo-apply", "index": MATCH}, "n_clicks"),
    Input({"type": "demo-clear", "index": MATCH}, "n_clicks"),
    State({"type": "demo-err", "index": MATCH}, "value"),
    State({"type": "demo-lat", "index": MATCH}, "value"),
    State({"type": "demo-down", "index": MATCH}, "value"),
    State({"type": "demo-ver", "index": MATCH}, "value"),
    State({"type": "demo-hog", "index": MATCH}, "value"),
    prevent_initial_call=True,
)
def apply_fault(
    _apply: int | None,
    _clear: int | None,
    error_rate: float | None,
    latency_ms: Any,
    down: list[str] | None,
    version: str | None,
    cpu_hog: Any,
) -> Any:
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not ctx.triggered or not ctx.triggered[0].get("value"):
        return no_update
    target = str(trigger["index"])
    client = demo_client()
    if client is None:
        return views.error_box("Demo controls are off (no --demo-admin).")
    with client:
        try:
            if trigger["type"] == "demo-clear":
                client.clear(target)
                return f"cleared faults on {display_text(target)}"
            body = fault_body(error_rate, latency_ms, down, version, cpu_hog)
            client.set_fault(target, body)
            shown = ", ".join(f"{k} {v}" for k, v in body.items())
            return display_text(f"applied to {target}: {shown}")
        except ApiError as exc:
            return views.error_box(str(exc))


@dash.callback(
    Output("demo-message", "children"),
    Output({"type": "demo-status", "index": ALL}, "children", allow_duplicate=True),
    Input("demo-clear-all", "n_clicks"),
    State({"type": "demo-status", "index": ALL}, "id"),
    prevent_initial_call=True,
)
def clear_all(n: int | None, ids: list[dict[str, Any]]) -> Any:
    if not n:
        return no_update, [no_update] * len(ids)
    client = demo_client()
    if client is None:
        return views.error_box("Demo controls are off (no --demo-admin)."), [""] * len(ids)
    with client:
        try:
            client.clear_all()
        except ApiError as exc:
            return views.error_box(str(exc)), [no_update] * len(ids)
    return "cleared every fault", [""] * len(ids)
