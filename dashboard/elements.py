"""Cytoscape elements and stylesheets, built as pure functions of a graph snapshot.

The graph JSON is the collector's ``GET /api/graph`` answer. Services are drawn inside their
team's compound node; orphans inside a dashed "(no team)" box; virtual nodes (databases, the
``user``, external peers) with their own shapes outside any team. Positions come from
``dashboard.positions`` (a ``preset`` layout), so a refresh never moves anything.

Above ``COLLAPSE_THRESHOLD`` nodes every group is drawn as one node (with counts and its worst
health) unless the user expanded it; a search focus shows one service and its neighbours only.
Cytoscape renders labels on a canvas, so telemetry text never reaches the DOM from here; a
canvas still obeys bidi controls, so every label is built with ``display_text``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from collector.vocabulary import BAD_HEALTH, USER_NODE, worst_health
from dashboard import positions as P
from dashboard.text import display_text, fmt_ms, fmt_pct, fmt_rate

Element = dict[str, Any]

COLLAPSE_THRESHOLD = 150
# Above this many drawn calls, edges are straight "haystack" lines without arrows: Cytoscape
# draws them several times faster than bezier curves, and at the zoom that shows them all an
# arrowhead is a pixel anyway (the details panel and the focus view give the direction).
BULK_EDGES = 600
# Folded, at most this many calls between team boxes are drawn: the busiest, plus every one
# with errors, in a blast radius or selected. Thousands of lines between a hundred boxes say
# nothing a person can read, and each costs Cytoscape style and layout time on first draw
# (2,115 at 1,238 services in 60 teams: about 0.7 s of a cold draw).
FOLDED_EDGE_LIMIT = 300
# Above this many visible nodes, node labels carry the name only (numbers are in the panel).
DETAILED_LABEL_LIMIT = 60
# A search focus shows metrics lines up to this many services: wider labels than that make
# the fitted picture too small to read (``positions.focus_layout``).
FOCUS_DETAILED_LIMIT = 16

HEALTH_COLORS = {
    "healthy": "#2f9e44",
    "degraded": "#f59f00",
    "failing": "#e03131",
    "down": "#5c0011",
    "unknown": "#adb5bd",
}
EDGE_OK = "#868e96"
EDGE_WARN = "#f59f00"
EDGE_BAD = "#e03131"
ERROR_WARN = 0.01
ERROR_BAD = 0.05


def node_el_id(name: str) -> str:
    return "s:" + name


def group_el_id(group: str) -> str:
    return "g:" + group


def edge_el_id(source: str, target: str) -> str:
    return "e:" + json.dumps([source, target])


def parse_el_id(el_id: str) -> tuple[str, Any]:
    """Split an element id into ("service", name), ("group", key) or ("edge", (src, dst))."""
    if el_id.startswith("s:"):
        return "service", el_id[2:]
    if el_id.startswith("g:"):
        return "group", el_id[2:]
    if el_id.startswith("e:"):
        try:
            src, dst = json.loads(el_id[2:])
        except (ValueError, TypeError):
            return "unknown", el_id
        return "edge", (str(src), str(dst))
    return "unknown", el_id


def health_color(health: object) -> str:
    return HEALTH_COLORS.get(str(health), HEALTH_COLORS["unknown"])


def edge_color(error_ratio: object) -> str:
    ratio = float(error_ratio) if isinstance(error_ratio, int | float) else 0.0
    if ratio >= ERROR_BAD:
        return EDGE_BAD
    if ratio >= ERROR_WARN:
        return EDGE_WARN
    return EDGE_OK


# An edge's width follows its call rate on a fixed scale, 1.5 px idle to 8 px at
# WIDTH_FULL_RPS and above, in half-pixel steps: it changes only when that call's own rate
# moves a step. (Scaled to the largest rate drawn, every edge changed width whenever that one
# did -- on a refresh, or on opening a team, which splits the largest aggregate -- and
# Cytoscape restyled them all: most of a second at 5,000 services.)
WIDTH_FULL_RPS = 1000.0


def edge_width(rate: float) -> float:
    share = min(1.0, math.log1p(max(rate, 0.0)) / math.log1p(WIDTH_FULL_RPS))
    return math.floor((1.5 + 6.5 * share) * 2 + 0.5) / 2


def virtual_kind(node_id: str, edges: list[dict[str, Any]]) -> str:
    """"user", "database" (an incoming call is a database call) or "external"."""
    if node_id == USER_NODE:
        return "user"
    for e in edges:
        if e.get("target") == node_id and e.get("connection_type") == "database":
            return "database"
    return "external"


def group_label(group: str) -> str:
    return group[5:] if group.startswith("team:") else group


def _metrics_line(item: Mapping[str, Any]) -> str:
    return " · ".join(
        (
            fmt_rate(item.get("rate_rps")),
            fmt_pct(item.get("error_ratio")),
            "p95 " + fmt_ms(item.get("p95_ms")),
        )
    )


def groups_of(graph: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The group keys (boxes) the named nodes are drawn in."""
    nodes = [n for n in graph.get("nodes", []) if "id" in n]
    orphans = sum(1 for n in nodes if n.get("kind") != "virtual" and not n.get("team"))
    wanted = set(names)
    return sorted({P.group_of(n, orphans) for n in nodes if str(n["id"]) in wanted})


def build_elements(graph: Mapping[str, Any] | None, pos: P.Positions,
                   **kw: Any) -> list[Element]:
    """``build_view``'s elements."""
    return build_view(graph, pos, **kw)[0]


def build_view(
    graph: Mapping[str, Any] | None,
    pos: P.Positions,
    *,
    expanded: Iterable[str] = (),
    focus: str | None = None,
    selected: str | None = None,
    highlight: Mapping[str, Any] | None = None,
    team_names: Mapping[str, str] | None = None,
    collapse_threshold: int = COLLAPSE_THRESHOLD,
) -> tuple[list[Element], int]:
    """All cytoscape elements for one refresh, and how many calls between folded teams were
    not drawn (``FOLDED_EDGE_LIMIT``).

    ``expanded``: group keys the user opened while collapsed. ``focus``: a service whose
    neighbourhood alone is shown. ``selected``: the element id the user tapped.
    ``highlight``: ``{"root": service, "impacted": [services]}`` from the who-to-page banner.
    """
    if not graph:
        return [], 0
    nodes: list[dict[str, Any]] = [n for n in graph.get("nodes", []) if "id" in n]
    edges: list[dict[str, Any]] = [
        e for e in graph.get("edges", []) if "source" in e and "target" in e
    ]
    by_id = {str(n["id"]): n for n in nodes}
    if focus is not None and focus in by_id:
        return focus_elements(nodes, edges, focus, selected), 0
    collapse = len(nodes) > collapse_threshold
    open_groups = set(expanded)
    orphan_count = sum(
        1 for n in graph.get("nodes", []) if n.get("kind") != "virtual" and not n.get("team")
    )
    root = str(highlight.get("root")) if highlight and highlight.get("root") else None
    impacted = {str(s) for s in (highlight or {}).get("impacted", []) or []}
    lit = ({root} | impacted) if root else set()
    detailed = len(nodes) <= DETAILED_LABEL_LIMIT
    names = team_names or {}

    members: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        members.setdefault(P.group_of(n, orphan_count), []).append(n)

    out_nodes: list[Element] = []
    shown_as: dict[str, str] = {}  # service name -> element id it is drawn as
    for group in sorted(members, key=P.group_sort_key):
        group_nodes = sorted(members[group], key=lambda n: str(n["id"]))
        gid = group_el_id(group)
        is_orphans = group.startswith(P.ORPHAN_GROUP)
        team = group_label(group)
        title = names.get(team, team) if group.startswith("team:") else team
        if collapse and group not in open_groups:
            out_nodes.append(_collapsed_node(group, gid, title, group_nodes, pos, selected, lit))
            for n in group_nodes:
                shown_as[str(n["id"])] = gid
            continue
        if group != P.EXTERNAL_GROUP:
            classes = ["team"] + (["orphans"] if is_orphans else [])
            if collapse:
                classes.append("expanded")
            label = display_text(title) + (" (tap the box to fold)" if collapse else "")
            out_nodes.append(
                {
                    "data": {"id": gid, "label": label, "group": group, "kind": "group"},
                    "classes": " ".join(classes),
                    "selectable": True,
                }
            )
        for n in group_nodes:
            name = str(n["id"])
            place = P.member_position(pos, group, name)
            el = _service_node(n, name, group, gid, is_orphans, edges, detailed, selected)
            if group == P.EXTERNAL_GROUP:
                el["data"].pop("parent", None)
            if place is not None:
                el["position"] = place
            out_nodes.append(el)
            shown_as[name] = node_el_id(name)

    apply_highlight(out_nodes, highlight)
    folded = {el["data"]["id"] for el in out_nodes if el["data"].get("kind") == "collapsed"}
    out_edges, hidden = _edges(edges, shown_as, detailed, selected, lit, folded)
    return out_nodes + out_edges, hidden


def focus_elements(
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    focus: str,
    selected: str | None,
) -> list[Element]:
    """A searched service with its callers and callees only, in their own small layout
    (``positions.focus_layout``), not drawn in team boxes so the picture fits tightly.

    Each service keeps its box as an invisible ``ghost`` parent: Cytoscape removes a compound
    node's children with it, so a box that vanished on the way from the whole graph to the
    focus (or back) would take its services along. ``dashboard/assets/graph.js`` builds the
    same elements in the browser (the search answers there at once).
    """
    callers = {str(e["source"]) for e in edges if e["target"] == focus}
    callees = {str(e["target"]) for e in edges if e["source"] == focus}
    detailed = len(callers | callees | {focus}) <= FOCUS_DETAILED_LIMIT
    place, font = P.focus_layout(focus, callers, callees, detailed=detailed)
    orphan_count = sum(1 for n in nodes if n.get("kind") != "virtual" and not n.get("team"))
    kept = [n for n in nodes if str(n["id"]) in place]
    kept.sort(key=lambda n: str(n["id"]))
    ghosts: dict[str, Element] = {}
    out: list[Element] = []
    shown_as: dict[str, str] = {}
    for n in kept:
        name = str(n["id"])
        group = P.group_of(n, orphan_count)
        gid = group_el_id(group)
        el = _service_node(n, name, group, gid, group.startswith(P.ORPHAN_GROUP), edges,
                           detailed, selected)
        if group == P.EXTERNAL_GROUP:
            el["data"].pop("parent", None)
        elif gid not in ghosts:
            ghosts[gid] = {"data": {"id": gid, "group": group, "kind": "ghost", "label": ""},
                           "classes": "ghost", "selectable": False}
        if name == focus:
            el["classes"] += " focus"
        if font > P.FOCUS_FONT:  # larger labels for a crowded focus (else the usual style)
            el["classes"] += " in-focus"
            el["data"]["font"] = font
        el["position"] = place[name]
        out.append(el)
        shown_as[name] = node_el_id(name)
    # Only the focus's own calls: calls among its neighbours would cross the picture.
    near = [e for e in edges if focus in (e["source"], e["target"])
            and str(e["source"]) in place and str(e["target"]) in place]
    return [ghosts[g] for g in sorted(ghosts)] + out + _edges(near, shown_as, detailed,
                                                             selected, set())[0]


def _service_node(
    n: Mapping[str, Any],
    name: str,
    group: str,
    gid: str,
    is_orphan: bool,
    edges: list[dict[str, Any]],
    detailed: bool,
    selected: str | None,
) -> Element:
    health = str(n.get("health", "unknown"))
    classes = [health]
    if n.get("kind") == "virtual":
        classes += ["virtual", virtual_kind(name, edges)]
    else:
        classes.append("service")
        if is_orphan:
            classes.append("orphan")
    if n.get("no_traces"):
        classes.append("no-traces")  # only the service mesh sees it: a coverage gap
    el_id = node_el_id(name)
    classes += _emphasis(el_id, selected)
    label = (display_text(name) + ("\n(no traces)" if n.get("no_traces") else "")
             + ("\n" + _metrics_line(n) if detailed else ""))
    return {
        "data": {
            "id": el_id,
            "parent": gid,
            "name": name,
            "label": label,
            "kind": str(n.get("kind", "service")),
            "team": n.get("team"),
            "health": health,
            "color": health_color(health),
            "group": group,
        },
        "classes": " ".join(classes),
    }


def _collapsed_node(
    group: str,
    gid: str,
    title: str,
    group_nodes: list[dict[str, Any]],
    pos: P.Positions,
    selected: str | None,
    lit: set[str],
) -> Element:
    healths = [str(n.get("health", "unknown")) for n in group_nodes]
    health = worst_health(healths)
    bad = sum(1 for h in healths if h in BAD_HEALTH)
    label = f"{display_text(title)}\n{len(group_nodes)} services" + (
        f" · {bad} failing" if bad else "")
    classes = ["collapsed", health]
    if group.startswith(P.ORPHAN_GROUP):
        classes.append("orphan")
    if selected == gid:
        classes.append("picked")
    if lit and any(str(n["id"]) in lit for n in group_nodes):
        classes.append("impacted")
    elif lit:
        classes.append("faded")
    el: Element = {
        "data": {
            "id": gid,
            "label": label,
            "group": group,
            "kind": "collapsed",
            "health": health,
            "color": health_color(health),
            "count": len(group_nodes),
        },
        "classes": " ".join(classes),
    }
    box = P.box_center(pos, group)
    if box is not None:
        centre, w, h = box
        size = max(60.0, 0.7 * min(w, h))
        el["position"] = centre
        el["data"]["size"] = round(size, 1)
        el["data"]["font"] = round(max(14.0, size / 7), 1)
    return el


def _emphasis(el_id: str, selected: str | None) -> list[str]:
    return ["picked"] if selected == el_id else []


def _edges(
    edges: list[dict[str, Any]],
    shown_as: Mapping[str, str],
    detailed: bool,
    selected: str | None,
    lit: set[str],
    folded: Collection[str] = (),
) -> tuple[list[Element], int]:
    """Calls between what each service is drawn as (``shown_as``), aggregated; and how many
    calls between ``folded`` team boxes were left out (above ``FOLDED_EDGE_LIMIT``)."""
    agg: dict[tuple[str, str], dict[str, Any]] = {}
    for e in edges:
        src = shown_as.get(str(e["source"]))
        dst = shown_as.get(str(e["target"]))
        if src is None or dst is None or src == dst and src.startswith("g:"):
            continue
        key = (src, dst)
        rate = float(e.get("rate_rps") or 0.0)
        ratio = float(e.get("error_ratio") or 0.0)
        cur = agg.get(key)
        if cur is None:
            agg[key] = {
                "rate": rate,
                "errors": rate * ratio,
                "p95": e.get("p95_ms"),
                "pairs": [(str(e["source"]), str(e["target"]))],
                "mesh_only": e.get("traced") is False,
            }
        else:
            cur["mesh_only"] = cur["mesh_only"] and e.get("traced") is False
            cur["rate"] += rate
            cur["errors"] += rate * ratio
            p95 = e.get("p95_ms")
            if isinstance(p95, int | float) and (cur["p95"] is None or p95 > cur["p95"]):
                cur["p95"] = p95
            cur["pairs"].append((str(e["source"]), str(e["target"])))
    drawn = []
    for (src, dst), a in sorted(agg.items()):
        ratio = a["errors"] / a["rate"] if a["rate"] > 0 else 0.0
        if len(a["pairs"]) == 1:
            s_name, t_name = a["pairs"][0]
            el_id = edge_el_id(s_name, t_name)
        else:
            s_name, t_name = src, dst
            el_id = "e:" + json.dumps([src, dst, "agg"])
        drawn.append((src, dst, a, ratio, el_id, s_name, t_name))
    hidden = 0
    between = [d for d in drawn if d[0] in folded and d[1] in folded]
    if len(between) > FOLDED_EDGE_LIMIT:
        # Calls between folded teams: the busiest are drawn, and every one with errors, in
        # the blast radius or selected; the rest are counted (``build_view``).
        def kept(d: tuple[Any, ...]) -> bool:
            return (d[3] >= ERROR_WARN or d[4] == selected
                    or bool(lit) and d[5] in lit and d[6] in lit)
        must = [d for d in between if kept(d)]
        rest = sorted((d for d in between if not kept(d)), key=lambda d: (-d[2]["rate"], d[4]))
        dropped = {d[4] for d in rest[max(0, FOLDED_EDGE_LIMIT - len(must)):]}
        hidden = len(dropped)
        drawn = [d for d in drawn if d[4] not in dropped]
    bulk = len(drawn) > BULK_EDGES
    out: list[Element] = []
    for src, dst, a, ratio, el_id, s_name, t_name in drawn:
        classes = ["bulk"] if bulk else []
        if a["mesh_only"]:
            classes.append("mesh-only")  # seen by the service mesh only, never traced
        if selected == el_id:
            classes.append("picked")
        if lit:
            if s_name in lit and t_name in lit:
                classes.append("blast")
            else:
                classes.append("faded")
        stats = {"rate_rps": a["rate"], "error_ratio": ratio, "p95_ms": a["p95"]}
        out.append(
            {
                "data": {
                    "id": el_id,
                    "source": src,
                    "target": dst,
                    "label": _metrics_line(stats) if detailed else "",
                    "width": edge_width(a["rate"]),
                    "color": edge_color(ratio),
                    "calls": len(a["pairs"]),
                },
                "classes": " ".join(classes),
            }
        )
    return out, hidden


def on_tap(
    view: dict[str, Any] | None, node: dict[str, Any] | None, edge: dict[str, Any] | None,
    trigger: str | None,
) -> dict[str, Any]:
    """The overview's view after a tap: select what was tapped; a folded team box opens, an
    opened one folds. ``assets/graph.js`` ``onTap`` does the same in the browser."""
    view = dict(view or {"selected": None, "expanded": [], "focus": None, "fit": 0})
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


def apply_highlight(elements: list[Element], highlight: Mapping[str, Any] | None) -> None:
    """Mark the root cause and its blast radius; fade the rest (in place)."""
    if not highlight or not highlight.get("root"):
        return
    root = str(highlight["root"])
    impacted = {str(s) for s in highlight.get("impacted", []) or []}
    for el in elements:
        data = el["data"]
        if "source" in data or data.get("kind") in ("group", "collapsed"):
            continue
        name = data.get("name")
        classes = el.get("classes", "").split()
        if name == root:
            classes.append("root-cause")
        elif name in impacted:
            classes.append("impacted")
        else:
            classes.append("faded")
        el["classes"] = " ".join(classes)


def incident_elements(graph: Mapping[str, Any] | None) -> list[Element]:
    """An incident's stored graph (``/api/incidents/{id}``: its root cause, blast radius and
    their calls at their worst while it was open) as Cytoscape elements: the root cause
    marked ``root-cause``, the rest ``impacted`` (for a shared host, the services it slowed)."""
    out: list[Element] = []
    names = set()
    for n in (graph or {}).get("nodes", []) or []:
        if not isinstance(n, Mapping) or not n.get("id"):
            continue
        name = str(n["id"])
        names.add(name)
        health = str(n.get("health") or "unknown")
        kind = "virtual" if n.get("kind") == "virtual" else "service"
        role = "root-cause" if n.get("role") == "root" else "impacted"
        out.append({"data": {"id": node_el_id(name), "name": name, "health": health,
                             "label": display_text(name) + "\n" + _metrics_line(n),
                             "color": health_color(health), "role": str(n.get("role"))},
                    "classes": " ".join((health, kind, role))})
    for e in (graph or {}).get("edges", []) or []:
        if not isinstance(e, Mapping):
            continue
        src, dst = str(e.get("source")), str(e.get("target"))
        if src not in names or dst not in names:
            continue
        out.append({"data": {"id": edge_el_id(src, dst), "source": node_el_id(src),
                             "target": node_el_id(dst), "width": 2.5,
                             "color": edge_color(e.get("error_ratio")),
                             "label": _metrics_line(e)},
                    "classes": "blast"})
    return out


def stylesheet(*, stale: bool = False) -> list[dict[str, Any]]:
    """The graph's stylesheet; ``stale`` greys everything out while the collector is away."""
    sheet: list[dict[str, Any]] = [
        {
            "selector": "node",
            "style": {
                "label": "data(label)",
                "text-wrap": "wrap",
                "text-valign": "bottom",
                "text-margin-y": 4,
                "font-size": 12,
                "min-zoomed-font-size": 5,
                "color": "#212529",
                "background-color": "data(color)",
                "width": 40,
                "height": 40,
                "border-width": 2,
                "border-color": "#343a40",
            },
        },
        {"selector": "node.service", "style": {"shape": "round-rectangle"}},
        {
            "selector": "node.orphan",
            "style": {"border-style": "dashed", "border-width": 3, "border-color": "#c92a2a"},
        },
        {
            "selector": "node.virtual",
            "style": {"border-style": "dotted", "border-color": "#495057", "width": 30},
        },
        {"selector": "node.database", "style": {"shape": "barrel", "height": 38}},
        {"selector": "node.user", "style": {"shape": "ellipse", "background-color": "#74c0fc"}},
        {"selector": "node.external", "style": {"shape": "diamond"}},
        {
            "selector": "node.team",
            "style": {
                "background-color": "#f1f3f5",
                "background-opacity": 0.8,
                "border-color": "#1c7ed6",
                "border-width": 2,
                "shape": "round-rectangle",
                "text-valign": "top",
                "text-halign": "center",
                "text-margin-y": -4,
                "font-size": 14,
                "font-weight": "bold",
                "color": "#1c7ed6",
                "padding": 18,
            },
        },
        {
            "selector": "node.team.orphans",
            "style": {"border-style": "dashed", "border-color": "#c92a2a", "color": "#c92a2a"},
        },
        {
            "selector": "node.collapsed",
            "style": {
                "shape": "round-rectangle",
                "width": "data(size)",
                "height": "data(size)",
                "font-size": "data(font)",
                "text-valign": "center",
                "text-halign": "center",
                "border-width": 4,
                "border-color": "#1c7ed6",
            },
        },
        {"selector": "node.collapsed.orphan", "style": {"border-style": "dashed"}},
        # A search focus's services: labels sized for the fitted picture (focus_layout).
        {"selector": "node.in-focus", "style": {"font-size": "data(font)"}},
        # A searched service's box, kept but not drawn (elements.focus_elements says why).
        {"selector": "node.ghost", "style": {"background-opacity": 0, "border-width": 0,
                                             "label": "", "padding": 0, "events": "no"}},
        {
            "selector": "edge",
            "style": {
                "curve-style": "bezier",
                "target-arrow-shape": "triangle",
                "width": "data(width)",
                "line-color": "data(color)",
                "target-arrow-color": "data(color)",
                "label": "data(label)",
                "font-size": 9,
                "min-zoomed-font-size": 6,
                "color": "#495057",
                "text-rotation": "autorotate",
                "text-background-color": "#ffffff",
                "text-background-opacity": 0.8,
                "text-background-padding": 1,
                "arrow-scale": 0.9,
            },
        },
        # What only the service mesh sees (collector.mesh): coverage gaps in the tracing.
        {"selector": "node.no-traces",
         "style": {"border-style": "double", "border-width": 6, "border-color": "#7048e8"}},
        {"selector": "edge.mesh-only", "style": {"line-style": "dotted"}},
        {"selector": "edge.bulk", "style": {"curve-style": "haystack", "haystack-radius": 0,
                                            "target-arrow-shape": "none"}},
        {"selector": ".faded", "style": {"opacity": 0.25}},
        {
            "selector": "node.impacted",
            "style": {"border-color": "#f76707", "border-width": 5, "opacity": 1},
        },
        {
            "selector": "node.root-cause",
            "style": {
                "border-color": "#c92a2a",
                "border-width": 8,
                "width": 46,
                "height": 46,
                "font-weight": "bold",
                "opacity": 1,
            },
        },
        {"selector": "edge.blast", "style": {"line-style": "dashed", "opacity": 1}},
        {
            "selector": ".picked",
            "style": {
                "border-color": "#1971c2",
                "border-width": 6,
                "line-color": "#1971c2",
                "target-arrow-color": "#1971c2",
                "z-index": 10,
            },
        },
    ]
    if stale:
        sheet.append(
            {
                "selector": "node, edge",
                "style": {"background-color": "#ced4da", "line-color": "#ced4da", "opacity": 0.5},
            }
        )
    return sheet


TEAMMAP_RADIUS = 260.0


def build_teammap_elements(teammap: Mapping[str, Any] | None) -> list[Element]:
    """The Conway view: one node per team (placed on a circle by name), cross-team calls."""
    if not teammap:
        return []
    teams = sorted(
        (n for n in teammap.get("nodes", []) if n.get("id") is not None), key=lambda n: str(n["id"])
    )
    count = max(1, len(teams))
    radius = TEAMMAP_RADIUS * max(1.0, count / 6)
    out: list[Element] = []
    for i, t in enumerate(teams):
        team_id = str(t["id"])
        angle = 2 * math.pi * i / count - math.pi / 2
        services = t.get("services") or []
        n_services = len(services) if isinstance(services, list) else int(services or 0)
        health = str(t.get("health", "unknown"))
        title = display_text(t.get("display_name") or team_id)
        out.append(
            {
                "data": {
                    "id": "t:" + team_id,
                    "team": team_id,
                    "label": f"{title}\n{n_services} service{'' if n_services == 1 else 's'}",
                    "health": health,
                    "color": health_color(health),
                },
                "position": {
                    "x": round(radius * math.cos(angle), 1),
                    "y": round(radius * math.sin(angle), 1),
                },
                "classes": " ".join(
                    ["teamnode", health] + (["orphan"] if team_id == "(orphans)" else [])
                ),
            }
        )
    known = {str(t["id"]) for t in teams}
    edges = [
        e
        for e in teammap.get("edges", [])
        if str(e.get("source")) in known and str(e.get("target")) in known
    ]
    for e in sorted(edges, key=lambda e: (str(e["source"]), str(e["target"]))):
        health = str(e.get("health", "unknown"))
        out.append(
            {
                "data": {
                    "id": "te:" + json.dumps([str(e["source"]), str(e["target"])]),
                    "source": "t:" + str(e["source"]),
                    "target": "t:" + str(e["target"]),
                    "label": _metrics_line(e),
                    "width": edge_width(float(e.get("rate_rps") or 0.0)),
                    "color": health_color(health) if health != "healthy" else EDGE_OK,
                },
            }
        )
    return out


def teammap_stylesheet() -> list[dict[str, Any]]:
    return [
        {
            "selector": "node",
            "style": {
                "label": "data(label)",
                "text-wrap": "wrap",
                "text-valign": "center",
                "text-halign": "center",
                "shape": "round-rectangle",
                # Big enough to read when the map is fitted into its box: the ring of teams
                # is TEAMMAP_RADIUS wide, so smaller nodes shrink to illegible labels.
                "width": 230,
                "height": 84,
                "background-color": "data(color)",
                "background-opacity": 0.85,
                "border-width": 3,
                "border-color": "#1c7ed6",
                "font-size": 22,
                "font-weight": "bold",
                "color": "#111111",
            },
        },
        {"selector": "node.orphan", "style": {"border-style": "dashed", "border-color": "#c92a2a"}},
        {
            "selector": "edge",
            "style": {
                "curve-style": "bezier",
                "target-arrow-shape": "triangle",
                "width": "data(width)",
                "line-color": "data(color)",
                "target-arrow-color": "data(color)",
                "label": "data(label)",
                "font-size": 15,
                "text-rotation": "autorotate",
                "text-background-color": "#ffffff",
                "text-background-opacity": 0.8,
            },
        },
    ]
