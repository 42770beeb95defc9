"""The Dash app: shared layout (header, banners, the one refresh ``Interval``, shared stores)
and the app-wide callbacks. Pages live in ``dashboard/pages`` and keep their own callbacks.

Settings live in the Flask config (``settings()``), not in module globals or the browser:
the demo token never leaves the server.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import dash
import flask
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.development.base_component import Component

from dashboard import selfmetrics, views
from dashboard.client import CollectorClient, Source
from dashboard.recent import RecentStates
from dashboard.state import (
    SharedFetches,
    browser_state,
    fetch_moment,
    initial_state,
    is_stale,
    next_state,
    wire_graph,
)
from dashboard.text import clock
from dashboard.timetravel import bar_info, compare_links, past_banner

SETTINGS_KEY = "CONWAY_SETTINGS"
RECENT_KEY = "CONWAY_RECENT_STATES"
CATALOG_KEY = "CONWAY_CATALOG"
FETCHES_KEY = "CONWAY_SHARED_FETCHES"
PAGES_DIR = Path(__file__).parent / "pages"


@dataclass(frozen=True)
class Settings:
    collector_url: str = "http://127.0.0.1:4318"
    demo_admin_url: str | None = None
    demo_token: str | None = None
    refresh_ms: int = 1500
    window_s: float = 60.0
    # "collector" (one collector's API) or "prometheus" (the traces_service_graph_* series
    # of every collector Prometheus scrapes; ownership from ``catalog``).
    source: str = "collector"
    prometheus_url: str | None = None
    catalog: Path | None = None
    prometheus_scrape_interval_s: float = 15.0
    alertmanager_url: str | None = None  # with --source prometheus: incidents from there
    # With --source prometheus: the Prometheus holding Istio / Linkerd sidecar series.
    mesh_prometheus_url: str | None = None

    @property
    def source_url(self) -> str:
        """Where the graph comes from: the collector, or Prometheus."""
        if self.source == "prometheus" and self.prometheus_url:
            return self.prometheus_url
        return self.collector_url

    @property
    def source_label(self) -> str:
        """What ``source_url`` is, for messages."""
        return "Prometheus" if self.source == "prometheus" and self.prometheus_url \
            else "Collector"

    @property
    def timeout_s(self) -> float:
        # A refresh must finish before the next one is due.
        return max(0.5, min(2.0, self.refresh_ms / 1000.0))


# The renderer's first two requests, ``/_dash-layout`` and ``/_dash-dependencies``, go out
# only once its ~1.8 MB of scripts are evaluated (half a second on a cold browser). This
# script, first in the page, sends both at once and hands the renderer their answers when it
# asks (the first GET of each; every other request, and any later one, is its own), so the
# server builds the layout while the browser is still busy with the scripts.
# ``__PREFIX__`` is the app's requests prefix, as a JSON string.
EARLY_FETCH = """<script id="conway-early-fetch">
(function () {
  var prefix = __PREFIX__, early = {}, left = 0, fetch0 = window.fetch;
  if (!fetch0) { return; }
  ["_dash-layout", "_dash-dependencies"].forEach(function (path) {
    var p = fetch0(prefix + path, {method: "GET", credentials: "same-origin",
      headers: {"Accept": "application/json", "Content-Type": "application/json"}});
    p.catch(function () {});  // the renderer sees (and reports) a failure when it asks
    early[prefix + path] = p;
    left += 1;
  });
  window.fetch = function (input, init) {
    var url = typeof input === "string" ? input : (input && input.url);
    var method = ((init && init.method) || "GET").toUpperCase();
    if (method === "GET" && Object.prototype.hasOwnProperty.call(early, url)) {
      var p = early[url];
      delete early[url];
      left -= 1;
      if (left === 0) { window.fetch = fetch0; }
      return p;
    }
    return fetch0.apply(this, arguments);
  };
})();
</script>"""

# Dash's own index page, with ``EARLY_FETCH`` before any script or style sheet.
INDEX_STRING = """<!DOCTYPE html>
<html>
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%early_fetch%}
        {%favicon%}
        {%css%}
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""


def settings() -> Settings:
    """The running app's settings (inside a Dash callback or layout function)."""
    value = flask.current_app.config[SETTINGS_KEY]
    assert isinstance(value, Settings)
    return value


def recent_states() -> RecentStates:
    """The states this process's refreshes made lately (see ``dashboard.recent``)."""
    value = flask.current_app.config[RECENT_KEY]
    assert isinstance(value, RecentStates)
    return value


def shared_fetches() -> SharedFetches:
    """Reads of the same moment made at the same time (a page and its first refresh): once."""
    value = flask.current_app.config[FETCHES_KEY]
    assert isinstance(value, SharedFetches)
    return value


def collector_client() -> Source:
    """The graph's source for one callback: the collector, or Prometheus."""
    s = settings()
    if s.source == "prometheus" and s.prometheus_url:
        from dashboard.promsource import CatalogOwnership, PrometheusSource

        catalog = flask.current_app.config[CATALOG_KEY]
        assert isinstance(catalog, CatalogOwnership)
        return PrometheusSource(
            s.prometheus_url, catalog, timeout_s=s.timeout_s,
            scrape_interval_s=s.prometheus_scrape_interval_s,
            alertmanager_url=s.alertmanager_url, mesh_url=s.mesh_prometheus_url,
        )
    return CollectorClient(s.collector_url, timeout_s=s.timeout_s)


def create_app(config: Settings) -> Dash:
    """Build the app. Call once per process: Dash pages register into a global registry."""
    app = Dash(
        "dashboard",
        use_pages=True,
        pages_folder=str(PAGES_DIR),
        assets_folder=str(Path(__file__).parent / "assets"),
        suppress_callback_exceptions=True,
        title="Conway",
        update_title="",
    )
    app.server.config[SETTINGS_KEY] = config
    app.server.config[RECENT_KEY] = recent = RecentStates()
    app.server.config[FETCHES_KEY] = fetches = SharedFetches()
    selfmetrics.install(app.server, recent, fetches)
    if config.source == "prometheus":
        from dashboard.promsource import CatalogOwnership

        # Loaded once per process (raises CatalogInvalid); reloaded when its files change.
        app.server.config[CATALOG_KEY] = CatalogOwnership(config.catalog)
    # A function: each visit's layout carries the page it was asked for (``routed_pages``).
    app.layout = lambda: shell(config)
    prefix = json.dumps(app.config.requests_pathname_prefix).replace("</", "<\\/")
    app.index_string = INDEX_STRING.replace(
        "{%early_fetch%}", EARLY_FETCH.replace("__PREFIX__", prefix))
    # The first client imports httpcore and loads the CA bundle (over a second on a busy
    # machine): pay that at start, not in a visitor's first refresh.
    CollectorClient(config.collector_url).close()
    return app


def shell(config: Settings) -> html.Div:
    nav = html.Nav(
        [
            html.Span("Conway", className="brand"),
            dcc.Link("Overview", href="/", id="nav-overview"),
            dcc.Link("Teams", href="/teams", id="nav-teams"),
            dcc.Link("Incidents", href="/incidents", id="nav-incidents"),
            dcc.Link("Demo", href="/demo", id="nav-demo"),
            dcc.Checklist(
                id="pause",
                options=[{"label": " pause live updates", "value": "pause"}],
                value=[],
                className="pause",
            ),
            html.Span(id="status-line", className="status-line"),
        ],
        className="nav",
    )
    return html.Div(
        [
            dcc.Store(id="state", data=initial_state(config.source_url, config.source_label)),
            # The graph the overview draws from (state.wire_graph), sent by the refresh on the
            # overview when a new one came; the state store holds everything else.
            dcc.Store(id="graph", data=None),
            # The key of ``state`` in this process's recent states: what callbacks that only
            # read the state take, instead of uploading it (see dashboard.recent).
            dcc.Store(id="state-key", data=None),
            dcc.Store(id="highlight", data=None),
            # Time travel (dashboard/timetravel.py): the moment the overview shows (None: live).
            dcc.Store(id="tt", data=None),
            dcc.Store(id="tt-url-sync", data=None),
            dcc.Store(id="tt-info", data=None),  # what the time bar needs of the state
            dcc.Interval(id="refresh", interval=config.refresh_ms, n_intervals=0),
            nav,
            source_banner(config),
            html.Div(id="collector-banner-slot"),
            html.Div(id="page-banner-slot"),
            html.Main(routed_pages(), className="page"),
        ],
        className="shell",
    )


def routed_pages() -> html.Div:
    """``dash.page_container`` with the page asked for already in it.

    The renderer fetches the layout (``/_dash-layout``) from the page it shows, whose address
    the request's Referer header carries. Dash pages renders a page only after the first
    render, in its router callback, fired when ``dcc.Location`` reports the address: one more
    round trip before anything is drawn (on the overview's cold first draw ~100-150 ms). So
    the page is rendered here, and the Location starts at that very address: it reports no
    change, and the router does not render the page again (it still routes every later
    navigation). Without a usable Referer (none sent, another origin, no such page, a layout
    that fails) this is the usual empty container, and the router renders the page."""
    page = _requested_page()
    if page is None:
        return dash.page_container
    content, title, location = page
    return html.Div([
        dcc.Location(id="_pages_location", refresh="callback-nav", **location),
        html.Div(content, id="_pages_content", disable_n_clicks=True),
        dcc.Store(id="_pages_store", data={"title": title}),
        html.Div(id="_pages_dummy", disable_n_clicks=True),
    ])


def _requested_page() -> tuple[Any, str, dict[str, str]] | None:
    """(layout, title, the Location's props) of the page whose address is the Referer."""
    if not flask.has_request_context() or not flask.request.referrer:
        return None
    ref = urlsplit(flask.request.referrer)
    if ref.netloc != flask.request.host or ref.scheme not in ("http", "https"):
        return None
    app = dash.get_app()
    path_id = (app.strip_relative_path(ref.path) or "").strip("/")
    # The query as the router gives it to a layout (one value, or a list of several).
    query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(ref.query).items()}
    for page in dash.page_registry.values():
        variables = _match(str(page.get("path_template") or page["path"]), path_id)
        if variables is None:
            continue
        layout, title = page.get("layout", ""), page.get("title", "")
        try:
            if callable(layout):
                layout = layout(**{**variables, **query})
            if callable(title):
                title = title(**variables)
        except Exception:  # the router's callback will render it (and show its error)
            return None
        search = f"?{ref.query}" if ref.query else ""
        location = {"pathname": ref.path, "search": search, "hash": "",
                    "href": urlunsplit((ref.scheme, ref.netloc, ref.path, ref.query, ""))}
        return layout, str(title), location
    return None


def _match(template: str, path_id: str) -> dict[str, str] | None:
    """The variables of ``template`` (``/services/<name>``) in ``path_id`` (no slashes at
    either end), or None when it is not that page."""
    want = [p for p in template.strip("/").split("/") if p]
    got = [p for p in path_id.split("/") if p]
    if len(want) != len(got):
        return None
    variables: dict[str, str] = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("<") and w.endswith(">"):
            variables[w[1:-1]] = g  # as the router passes it: the page unquotes it
        elif w != g:
            return None
    return variables


def source_banner(config: Settings) -> html.Div:
    """With the Prometheus source, say once what it cannot show and how health is judged."""
    if config.source != "prometheus":
        return html.Div(id="source-banner-slot")
    return html.Div(
        [
            html.Strong(f"Prometheus source ({config.prometheus_url}): "
                        + (f"incidents as the collectors page them, from Alertmanager "
                           f"({config.alertmanager_url})." if config.alertmanager_url
                           else "no incidents / root cause from traces.")),
            html.Div(
                "The graph, rates, error ratios and p50/p95/p99 come from the "
                "traces_service_graph_* series of every collector Prometheus scrapes; "
                "ownership from the catalog. Health is judged from error-ratio thresholds "
                "only (and down when a service's scrape fails); per-service self time and "
                "versions are not available from the Prometheus source.",
                className="banner-detail",
            ),
        ],
        id="source-banner",
        className="banner",
        style={"background": "#e7f5ff", "color": "#0b3d62"},
    )


@dash.callback(
    Output("state", "data"),
    Output("state-key", "data"),
    Output("tt-info", "data"),
    Output("graph", "data"),
    Input("refresh", "n_intervals"),
    Input("tt", "data"),
    State("state", "data"),
    State("state-key", "data"),
    State("_pages_location", "pathname"),
)
def refresh(_n: int | None, at: float | None, state: dict[str, Any] | None,
            key: str | None, path: str | None) -> Any:
    """Poll the collector once; keep the last good graph if it does not answer. On the
    overview showing a past moment (``tt``), fetch it once: the past does not move. Also
    gives the key of the new state among the recent ones (``state-key``, what callbacks that
    only read it take), the time bar the little it needs of it (``tt-info``) and, on the
    overview, a new graph for the browser to draw (``graph``).

    The browser's state holds all but the graph (``browser_state``): the graph goes down
    once as the graph store and is kept here, under the state's key, for the next refresh."""
    s = settings()
    overview = (path or "/").rstrip("/") == ""
    at = at if isinstance(at, int | float) and overview else None
    if at is not None and ctx.triggered_id == "refresh" and state \
            and state.get("at") == at and state.get("reachable"):
        return no_update, no_update, no_update, no_update
    prev = dict(state) if state else None
    if prev is not None:
        prev["graph"] = (recent_states().get(key) or {}).get("graph")
    with collector_client() as client:
        fetched, shown, refusal = fetch_moment(client, s.window_s, at, prev, shared_fetches())
    new = next_state(prev, fetched, s.source_url, time.time(), s.source_label, at=shown,
                     refused=(at, refusal) if at is not None and refusal is not None
                     else None)
    fresh = new.get("graph") is not None and new["graph"] is not (prev or {}).get("graph")
    return (browser_state(new), recent_states().put(new), bar_info(new),
            wire_graph(new["graph"]) if fresh and overview else no_update)


def render_banners(state: dict[str, Any] | None, now: float) -> tuple[Any, Any, str]:
    """Collector banner, who-to-page banner and the header's status line for one state."""
    collector = views.collector_banner(state, now) or views.paging_banner(state)
    at = (state or {}).get("at")
    incidents = (state or {}).get("incidents", []) or []
    # In the past (time travel) the banner shows the incidents open then, said to be history.
    page = views.page_banner(incidents, now if at is None else float(at),
                             (state or {}).get("team_names") or {})
    if at is not None:
        page = html.Div([past_banner(float(at), incidents, now), page])
    elif page is not None:
        page = html.Div([page, compare_links(incidents)])  # a step back to before each
    source = str((state or {}).get("source") or "Collector").lower()
    if at is not None and state and state.get("reachable"):
        status = f"viewing {clock(float(at))} (history)"
    elif not state or state.get("reachable") is None:
        status = f"waiting for {'the collector' if source == 'collector' else source}…"
    elif is_stale(state):
        status = f"stale since {clock(float(state['fetched_at']))}"
    elif state.get("reachable") is False:
        status = f"{source} unreachable"
    else:
        status = f"updated {clock(float(state.get('fetched_at') or now))}"
    return collector, page, status


@dash.callback(
    Output("collector-banner-slot", "children"),
    Output("page-banner-slot", "children"),
    Output("status-line", "children"),
    Input("state-key", "data"),
)
def banners(key: str | None) -> tuple[Any, Any, Any]:
    state = recent_states().get(key)
    if state is None:
        return no_update, no_update, no_update
    return render_banners(state, time.time())


@dash.callback(Output("refresh", "disabled"), Input("pause", "value"))
def pause(value: list[str] | None) -> bool:
    return bool(value and "pause" in value)


def highlight_for(state: dict[str, Any] | None, incident_id: str) -> dict[str, Any] | None:
    """The root cause and blast radius of one open incident, for the graph's highlight."""
    for inc in (state or {}).get("incidents", []) or []:
        rc = inc.get("root_cause") or {}
        if str(inc.get("id", rc.get("service"))) == incident_id:
            return {
                "root": rc.get("service"),
                "impacted": [
                    str(x.get("service")) for x in inc.get("impacted", []) or [] if x.get("service")
                ],
            }
    return None


@dash.callback(
    Output("highlight", "data"),
    Output("_pages_location", "pathname", allow_duplicate=True),
    Input({"type": "incident-root", "index": ALL}, "n_clicks"),
    State("state", "data"),
    State("_pages_location", "pathname"),
    prevent_initial_call=True,
)
def root_clicked(
    clicks: list[int | None], state: dict[str, Any] | None, path: str | None
) -> tuple[Any, Any]:
    trigger = ctx.triggered_id
    # The banner is re-rendered on every refresh: new buttons with no clicks fire this too.
    if not isinstance(trigger, dict) or not any(clicks or []):
        return no_update, no_update
    value = ctx.triggered[0].get("value") if ctx.triggered else None
    if not value:
        return no_update, no_update
    target = highlight_for(state, str(trigger.get("index")))
    return target, ("/" if path != "/" else no_update)


def page_title(text: str) -> Component:
    return html.H2(text, className="page-title")
