"""HTML pieces built from collector JSON: banners, legend, cards, tables (pure builders).

Telemetry and catalog strings only ever become component children (text, escaped by React)
or, for links, an ``href`` checked by ``safe_url``; nothing here interprets them as HTML. Each
one is drawn through ``display_text`` (bidi controls shown escaped, so a name cannot reorder
the banner); ids and hrefs keep the raw name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from dash import dcc, html
from dash.development.base_component import Component

from collector.vocabulary import BAD_HEALTH
from dashboard import elements as E
from dashboard import positions as P
from dashboard.state import State, is_stale
from dashboard.text import (
    ago,
    clock,
    display_text,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    path_for_service,
    path_for_team,
    safe_url,
)

MAX_BANNER_INCIDENTS = 3


def health_badge(health: object) -> html.Span:
    h = str(health or "unknown")
    return html.Span(
        display_text(h),
        className=f"badge health-{h if h in E.HEALTH_COLORS else 'unknown'}",
        style={"backgroundColor": E.health_color(h)},
    )


def runbook_link(url: object, label: str = "runbook") -> Component:
    """A link for an http(s) runbook; any other scheme is refused and said so, as text."""
    href = safe_url(url)
    if href is None:
        if url:
            return html.Span(f"{label}: not shown (only http/https links are allowed)",
                             className="refused-link")
        return html.Span(f"no {label}", className="muted")
    return html.A(label, href=href, target="_blank", rel="noopener noreferrer")


def service_link(name: object) -> dcc.Link:
    return dcc.Link(display_text(name), href=path_for_service(str(name)),
                    className="service-link")


def team_link(name: object, display: object | None = None) -> Component:
    if not name:
        return html.Span("no team (orphan)", className="orphan-text")
    return dcc.Link(display_text(display or name), href=path_for_team(str(name)),
                    className="team-link")


def collector_banner(state: State | None, now: float) -> Component | None:
    """"Collector (or Prometheus) unreachable at URL since HH:MM:SS (N s)", or None while it
    answers."""
    if not state or state.get("reachable") is not False:
        return None
    since = float(state.get("down_since") or now)
    lines: list[Component] = [
        html.Strong(
            f"{state.get('source') or 'Collector'} unreachable at {state.get('collector')} "
            f"since {clock(since)} "
            f"({max(0.0, now - since):.0f} s)"
        ),
        html.Div(display_text(state.get("error") or ""), className="banner-detail"),
    ]
    if is_stale(state) and state.get("fetched_at"):
        lines.append(
            html.Div(
                f"Showing the last graph, stale since {clock(float(state['fetched_at']))}.",
                className="banner-detail",
            )
        )
    else:
        lines.append(html.Div("No graph received yet.", className="banner-detail"))
    return html.Div(lines, id="collector-banner", className="banner banner-unreachable")


def paging_banner(state: State | None) -> Component | None:
    """"Pages are not getting through" while the collector cannot deliver to a sink."""
    failing = [s for s in (state or {}).get("paging_errors", []) or [] if isinstance(s, dict)]
    if not failing:
        return None
    lines: list[Component] = [html.Strong(
        "Pages are not getting through: the collector cannot reach "
        + ", ".join(display_text(f"{s.get('kind')} {s.get('sink')}") for s in failing)
        + ". Incidents still show here; it keeps retrying.")]
    for s in failing:
        lines.append(html.Div(display_text(
            f"{s.get('sink')}: {s.get('last_error')} ({s.get('queued')} alerts waiting, "
            f"{s.get('failures')} failed sends)"), className="banner-detail"))
    return html.Div(lines, id="paging-banner", className="banner banner-unreachable")


def page_banner(
    incidents: Sequence[Mapping[str, Any]],
    now: float,
    team_names: Mapping[str, str] | None = None,
) -> Component | None:
    """The who-to-page banner: one block per open incident, newest first, at most three."""
    open_ones = [i for i in incidents if i.get("status", "open") == "open"]
    if not open_ones:
        return None
    open_ones = sorted(open_ones, key=lambda i: -float(i.get("started_at") or 0))
    names = team_names or {}
    blocks = [_incident_block(i, now, names) for i in open_ones[:MAX_BANNER_INCIDENTS]]
    if len(open_ones) > MAX_BANNER_INCIDENTS:
        blocks.append(
            html.Div(f"and {len(open_ones) - MAX_BANNER_INCIDENTS} more open incidents",
                     className="banner-detail")
        )
    return html.Div(blocks, id="page-banner", className="banner banner-page")


def _incident_block(inc: Mapping[str, Any], now: float, names: Mapping[str, str]) -> html.Div:
    rc = inc.get("root_cause") or {}
    page = inc.get("page") or {}
    root = str(rc.get("service") or "?")
    team = page.get("team") or rc.get("team")
    evidence = rc.get("evidence")
    summary = evidence.get("summary") if isinstance(evidence, Mapping) else evidence
    impacted = [x for x in inc.get("impacted", []) or [] if isinstance(x, Mapping)]
    confidence = inc.get("confidence")
    parts: list[Component] = [
        html.Div(
            [
                html.Span("Page ", className="banner-verb"),
                html.Strong(
                    display_text(
                        names.get(str(team), team) if team
                        else page.get("fallback") or "nobody: the root cause has no owning team"
                    ),
                    className="page-team",
                ),
                html.Span(" · on-call "),
                html.Strong(display_text(page.get("on_call") or "unknown"),
                            className="page-oncall"),
                html.Span(" · channel "),
                html.Span(display_text(page.get("channel") or "unknown"),
                          className="page-channel"),
                html.Span(" · "),
                runbook_link(page.get("runbook")),
            ],
            className="banner-line",
        ),
        html.Div(
            [
                html.Span("Root cause: "),
                html.Button(
                    display_text(root),
                    id={"type": "incident-root", "index": str(inc.get("id", root))},
                    className="root-button",
                    title="highlight it and its blast radius on the graph",
                ),
                html.Span(f" ({display_text(rc.get('kind', '?'))}) "),
                html.Span("team "),
                team_link(rc.get("team"), names.get(str(rc.get("team")))),
                html.Span(f" · since {ago(inc.get('started_at'), now)}"),
                html.Span(" · "),
                dcc.Link("incident page", href="/incidents/" + quote(str(inc.get("id", root)),
                                                                     safe=""),
                         className="incident-page-link"),
                html.Span(
                    f" · confidence {float(confidence) * 100:.0f}%"
                    if isinstance(confidence, int | float)
                    else ""
                ),
            ],
            className="banner-line",
        ),
    ]
    vc = inc.get("version_change")
    if isinstance(vc, Mapping) and vc:
        parts.append(
            html.Div(
                f"Version change on {display_text(vc.get('service'))}: "
                f"{display_text(vc.get('from'))} → {display_text(vc.get('to'))} "
                f"({ago(vc.get('at'), now)})",
                className="banner-line version-change",
            )
        )
    if summary:
        parts.append(html.Div(display_text(summary), className="banner-detail"))
    slowed = evidence.get("services") if isinstance(evidence, Mapping) else None
    if rc.get("kind") == "shared-host" and isinstance(slowed, list) and slowed:
        items_h: list[Component] = [html.Span("Slowed on this host: ")]
        for k, name in enumerate(slowed[:12]):
            if k:
                items_h.append(html.Span(", "))
            items_h.append(service_link(name))
        parts.append(html.Div(items_h, className="banner-line shared-host"))
    if impacted:
        items: list[Component] = [html.Span("Impacted: ")]
        for k, x in enumerate(impacted[:12]):
            if k:
                items.append(html.Span(", "))
            items.append(service_link(x.get("service")))
            team_id = x.get("team")
            shown = names.get(str(team_id), team_id) if team_id else "no team"
            # What share of its failed (or slowed) requests the root cause explains.
            explained, affected = x.get("explained"), x.get("affected")
            if isinstance(explained, int) and isinstance(affected, int) and affected:
                how = "slowed" if rc.get("kind") == "latency" else "failed"
                shown += f"; {explained} of {affected} {how} with {root} below"
            items.append(html.Span(display_text(f" ({shown})"),
                                   title=display_text(x.get("summary") or "")))
        if len(impacted) > 12:
            items.append(html.Span(f" and {len(impacted) - 12} more"))
        parts.append(html.Div(items, className="banner-line impacted"))
    return html.Div(parts, className="incident")


def legend() -> html.Div:
    """What colours, shapes and borders mean on the live graph."""
    swatches = [
        html.Span([html.Span(className="swatch", style={"backgroundColor": c}), h],
                  className="legend-item")
        for h, c in E.HEALTH_COLORS.items()
    ]
    shapes = [
        html.Span("▢ service in its team's box", className="legend-item"),
        html.Span("⬚ dashed red: orphan (no owning team)", className="legend-item"),
        html.Span("⛁ database", className="legend-item"),
        html.Span("◆ external peer", className="legend-item"),
        html.Span("● user", className="legend-item"),
        html.Span("edge width: rate · colour: error %", className="legend-item"),
    ]
    return html.Div(swatches + shapes, className="legend")


def details_panel(
    graph: Mapping[str, Any] | None,
    selected: str | None,
    team_names: Mapping[str, str] | None = None,
) -> Component:
    """Numbers for the tapped element, read from the current graph (so they stay live)."""
    if not graph or not selected:
        return html.Div("Tap a service or a call to see its numbers.", className="muted")
    kind, key = E.parse_el_id(selected)
    if kind == "service":
        node = next((n for n in graph.get("nodes", []) if str(n.get("id")) == key), None)
        if node is None:
            return html.Div(f"{display_text(key)}: not in the current window.",
                            className="muted")
        return html.Div(
            [
                html.H4(service_link(key)),
                html.Div(["health ", health_badge(node.get("health"))]),
                html.Div(["team ", team_link(node.get("team"))]),
                html.Div(f"kind {display_text(node.get('kind'))}"),
                *_coverage(node, "service"),
                _stats(node),
                *_mesh_stats(node),
            ],
            className="details",
        )
    if kind == "edge":
        src, dst = key
        edge = next(
            (e for e in graph.get("edges", [])
             if str(e.get("source")) == src and str(e.get("target")) == dst),
            None,
        )
        if edge is None:
            return html.Div(f"{display_text(src)} → {display_text(dst)}: not in the current "
                            "window.", className="muted")
        return html.Div(
            [html.H4([service_link(src), " → ", service_link(dst)]),
             html.Div(["health ", health_badge(edge.get("health"))]),
             *_coverage(edge, "call"), _stats(edge), *_mesh_stats(edge)],
            className="details",
        )
    if kind == "group":
        group = str(key)
        team = E.group_label(group)
        title = (team_names or {}).get(team, team) if group.startswith("team:") else team
        nodes = graph.get("nodes", [])
        orphans = sum(1 for n in nodes if n.get("kind") != "virtual" and not n.get("team"))
        members = [n for n in nodes if P.group_of(n, orphans) == group]
        bad = sorted(str(n.get("id")) for n in members if n.get("health") in BAD_HEALTH)
        return html.Div(
            [
                html.H4(team_link(team, title) if group.startswith("team:")
                        else display_text(title)),
                html.Div(f"{len(members)} services" + (
                    f", failing: {display_text(', '.join(bad[:10]))}" if bad else "")),
                html.Div("Tap a folded box to open it; tap an open box to fold it.",
                         className="muted"),
            ],
            className="details",
        )
    return html.Div("", className="muted")


def _coverage(item: Mapping[str, Any], what: str) -> list[Component]:
    """What only the service mesh sees (``collector.mesh``): a call with no traces, a service
    that sends none — coverage gaps to instrument."""
    if what == "service" and item.get("no_traces"):
        return [html.Div("no traces: only the service mesh sees this service",
                         className="no-traces-text")]
    if what == "call" and item.get("traced") is False:
        return [html.Div("seen by the service mesh only (no traces)",
                         className="no-traces-text")]
    return []


def _mesh_stats(item: Mapping[str, Any]) -> list[Component]:
    """The mesh's own figures under the trace ones (both shown when both saw the calls)."""
    mesh = item.get("mesh")
    if not isinstance(mesh, Mapping):
        return []
    title = f"{display_text(mesh.get('mesh') or 'mesh')} sidecars"
    if mesh.get("reporter"):
        title += f" (reporter={display_text(mesh.get('reporter'))})"
    rows = [
        ("rate", fmt_rate(mesh.get("rate_rps"))),
        ("errors", fmt_pct(mesh.get("error_ratio"))),
        ("p50", fmt_ms(mesh.get("p50_ms"))),
        ("p95", fmt_ms(mesh.get("p95_ms"))),
        ("p99", fmt_ms(mesh.get("p99_ms"))),
    ]
    flags = mesh.get("response_flags")
    if isinstance(flags, Mapping) and flags:
        rows.append(("flags", display_text(", ".join(f"{k} {v}" for k, v in flags.items()))))
    return [html.H5(title),
            html.Table([html.Tr([html.Td(k), html.Td(v)]) for k, v in rows],
                       className="stats mesh-stats")]


def _stats(item: Mapping[str, Any]) -> html.Table:
    rows = [
        ("rate", fmt_rate(item.get("rate_rps"))),
        ("errors", fmt_pct(item.get("error_ratio"))),
        ("p50", fmt_ms(item.get("p50_ms"))),
        ("p95", fmt_ms(item.get("p95_ms"))),
        ("p99", fmt_ms(item.get("p99_ms"))),
    ]
    scraped = item.get("scraped_rps")
    if isinstance(scraped, int | float):
        rows.append(("served", f"{fmt_rate(scraped)} (its /metrics)"))
    share = item.get("sampled_share")
    if isinstance(share, int | float) and 0 < share < 1:
        # Head-sampled traces: the numbers above are estimates from this share of calls.
        rows.append(("traced", f"{fmt_pct(share)} of calls (sampled; rates estimated)"))
    ahead = item.get("clock_ahead_s")
    if isinstance(ahead, int | float):
        # Its spans end after they arrive: shown at arrival time, its durations kept.
        rows.append(("clock", f"{ahead:.1f} s ahead"))
    return html.Table([html.Tr([html.Td(k), html.Td(v)]) for k, v in rows], className="stats")


def owner_card(owner: Mapping[str, Any] | None) -> html.Div:
    if not owner:
        return html.Div(
            [html.H3("Owner"), html.Div("No owning team: this service is an orphan.",
                                        className="orphan-text")],
            className="card owner-card",
        )
    return html.Div(
        [
            html.H3("Owner"),
            html.Div(["team ", team_link(owner.get("team"), owner.get("display_name"))]),
            html.Div(f"on-call {display_text(owner.get('on_call') or 'unknown')}"),
            html.Div(f"channel {display_text(owner.get('channel') or 'unknown')}"),
            html.Div(runbook_link(owner.get("runbook"))),
            html.Div(f"source: {display_text(owner.get('source') or 'unknown')}",
                     className="muted"),
        ],
        className="card owner-card",
    )


def _table_card(title: str, headings: Sequence[str], rows: Sequence[Sequence[Any]]) -> html.Div:
    """A titled card with a table, or "none in this window" when there are no rows."""
    if not rows:
        return html.Div([html.H3(title), html.Div("none in this window", className="muted")],
                        className="card")
    header = html.Tr([html.Th(h) for h in headings])
    body = [html.Tr([html.Td(cell) for cell in row]) for row in rows]
    return html.Div([html.H3(title), html.Table([header, *body], className="table")],
                    className="card")


def _numbers(r: Mapping[str, Any]) -> list[Any]:
    return [health_badge(r.get("health")), fmt_rate(r.get("rate_rps")),
            fmt_pct(r.get("error_ratio")), fmt_ms(r.get("p95_ms"))]


def neighbours_table(title: str, rows: Sequence[Mapping[str, Any]]) -> html.Div:
    """Callers or callees with their numbers and health, each linking to its page."""
    return _table_card(title, ("service", "health", "rate", "errors", "p95"),
                       [[service_link(r.get("service")), *_numbers(r)] for r in rows])


def edges_table(title: str, rows: Sequence[Mapping[str, Any]]) -> html.Div:
    """Calls between services (a team's calls in and out), each end linking to its page."""
    return _table_card(title, ("from", "to", "health", "rate", "errors", "p95"),
                       [[service_link(r.get("source")), service_link(r.get("target")),
                         *_numbers(r)] for r in rows])


def error_box(message: str) -> html.Div:
    return html.Div(display_text(message), className="error-box")
