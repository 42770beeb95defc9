"""Deterministic, stable node positions for the live graph (cytoscape ``preset`` layout).

Nodes are grouped (a team, the orphans, the external dependencies); each group gets a box on a
shelf: boxes are placed left to right until a row is full, then on a new row below everything.
Inside a box, members sit on a small grid in slot order. Both the box origin and every member
slot are stored the first time they are seen and never recomputed, so a refresh with new numbers
moves nothing and a new node takes the next free slot without moving the others.

Each box reserves room for growth (``headroom``); a group that outgrows its box is moved, whole,
to a new, larger box at the end: only that group moves. The state is plain JSON (it lives in a
``dcc.Store``) and every function here is pure.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

# Geometry, in cytoscape model units.
CELL_W = 140.0
CELL_H = 105.0
GROUP_GAP = 90.0
# The shelf's row width is chosen once, from the first graph seen, for a landscape picture
# (width about ASPECT times height); later groups reuse it so nothing already placed moves.
ASPECT = 2.4
MIN_ROW_WIDTH = 900.0
# Odd columns sit a little lower, so calls along a row do not run through other nodes.
STAGGER = 0.28
# Orphans are split into this many fixed hash buckets once they are more than ORPHAN_CHUNK,
# so a graph with no catalog (every service an orphan) still gets bounded boxes.
ORPHAN_CHUNK = 40
ORPHAN_BUCKETS = 32

# Slots of nodes that left the window are kept (a node that comes back returns to its place),
# up to this many; past it the layout starts afresh from the current nodes, once, counted.
MAX_REMEMBERED = 10_000

ORPHAN_GROUP = "(no team)"
EXTERNAL_GROUP = "(dependencies)"

Positions = dict[str, Any]


def empty_positions() -> Positions:
    """A fresh layout state: no groups, shelf cursor at the origin."""
    return {"groups": {}, "members": {}, "cursor": [0.0, 0.0], "row_bottom": 0.0,
            "row_width": None, "resets": 0}


def group_of(node: dict[str, Any], orphan_count: int) -> str:
    """The box a graph node belongs to: its team, the orphans (chunked when many) or externals."""
    if node.get("kind") == "virtual":
        return EXTERNAL_GROUP
    team = node.get("team")
    if team:
        return f"team:{team}"
    if orphan_count > ORPHAN_CHUNK:
        bucket = zlib.crc32(str(node.get("id", "")).encode()) % ORPHAN_BUCKETS
        return f"{ORPHAN_GROUP} {bucket + 1:02d}"
    return ORPHAN_GROUP


def group_sort_key(group: str) -> tuple[int, str]:
    """Teams first (by name), then orphan boxes, then external dependencies."""
    if group.startswith("team:"):
        return (0, group)
    if group.startswith(ORPHAN_GROUP):
        return (1, group)
    return (2, group)


def _box_shape(capacity: int) -> tuple[int, int]:
    cols = max(2, round(math.sqrt(capacity)))
    rows = max(1, math.ceil(capacity / cols))
    return cols, rows


def _capacity(count: int) -> int:
    # Room to grow: small teams get two spare slots, large ones a quarter more.
    return count + max(2, count // 4)


def box_size(box: dict[str, Any]) -> tuple[float, float]:
    """Width and height of a reserved box, stagger included."""
    return box["cols"] * CELL_W, (box["rows"] + STAGGER) * CELL_H


def _place_box(pos: Positions, group: str, count: int) -> None:
    cols, rows = _box_shape(_capacity(count))
    width, height = box_size({"cols": cols, "rows": rows})
    x, y = pos["cursor"]
    if x > 0 and x + width > float(pos["row_width"] or MIN_ROW_WIDTH):
        x, y = 0.0, pos["row_bottom"] + GROUP_GAP
    pos["groups"][group] = {"x": x, "y": y, "cols": cols, "rows": rows}
    pos["cursor"] = [x + width + GROUP_GAP, y]
    pos["row_bottom"] = max(pos["row_bottom"], y + height)


def assign(previous: Positions | None, nodes: Iterable[dict[str, Any]]) -> Positions:
    """Return the layout state with every node of ``nodes`` placed.

    Existing slots are kept; new groups and members are appended in sorted order, so the same
    input always yields the same layout whatever order the API listed the nodes in.
    """
    pos: Positions = _copy(previous) if previous else empty_positions()
    node_list = list(nodes)
    known: set[str] = set()
    for m in pos["members"].values():
        known.update(m)
    fresh = {str(n.get("id")) for n in node_list} - known
    if fresh and len(known) + len(fresh) > MAX_REMEMBERED:
        resets = int(pos.get("resets", 0)) + 1
        pos = empty_positions()
        pos["resets"] = resets
    orphan_count = sum(1 for n in node_list if n.get("kind") != "virtual" and not n.get("team"))
    by_group: dict[str, list[str]] = {}
    for node in node_list:
        by_group.setdefault(group_of(node, orphan_count), []).append(str(node.get("id")))
    if pos.get("row_width") is None and by_group:
        area = 0.0
        for ids in by_group.values():
            cols, rows = _box_shape(_capacity(len(set(ids))))
            area += (cols * CELL_W + GROUP_GAP) * (rows * CELL_H + GROUP_GAP)
        pos["row_width"] = max(MIN_ROW_WIDTH, math.sqrt(area * ASPECT))
    for group in sorted(by_group, key=group_sort_key):
        ids = sorted(set(by_group[group]))
        members: dict[str, int] = pos["members"].setdefault(group, {})
        new_ids = [i for i in ids if i not in members]
        if not new_ids and group in pos["groups"]:
            continue
        total = len(members) + len(new_ids)
        box = pos["groups"].get(group)
        if box is None or total > box["cols"] * box["rows"]:
            # New group, or one that outgrew its box: (re)place it at the end of the shelf.
            _place_box(pos, group, total)
        next_slot = max(members.values(), default=-1) + 1
        for node_id in new_ids:
            members[node_id] = next_slot
            next_slot += 1
    return pos


def _copy(pos: Positions) -> Positions:
    return {
        "groups": {g: dict(b) for g, b in pos.get("groups", {}).items()},
        "members": {g: dict(m) for g, m in pos.get("members", {}).items()},
        "cursor": list(pos.get("cursor", [0.0, 0.0])),
        "row_bottom": float(pos.get("row_bottom", 0.0)),
        "row_width": pos.get("row_width"),
        "resets": int(pos.get("resets", 0)),
    }


def member_position(pos: Positions, group: str, node_id: str) -> dict[str, float] | None:
    """The model coordinates of a member, or None if it was never assigned."""
    box = pos["groups"].get(group)
    slot = pos["members"].get(group, {}).get(node_id)
    if box is None or slot is None:
        return None
    col = slot % box["cols"]
    row = slot // box["cols"]
    return {
        "x": box["x"] + (col + 0.5) * CELL_W,
        "y": box["y"] + (row + 0.5 + (STAGGER if col % 2 else 0.0)) * CELL_H,
    }


def box_center(pos: Positions, group: str) -> tuple[dict[str, float], float, float] | None:
    """Centre, width and height of a group's reserved box (used for a collapsed group)."""
    box = pos["groups"].get(group)
    if box is None:
        return None
    w, h = box_size(box)
    return {"x": box["x"] + w / 2, "y": box["y"] + h / 2}, w, h


# A search focus is drawn in its own small layout: the service in the middle, the services
# calling it in columns to its left, those it calls to its right, each column in name order.
# Cells are sized for the labels (a metrics line when few are shown, the name only when many),
# so the fitted picture stays legible.
FOCUS_CELL = {True: (260.0, 95.0), False: (170.0, 70.0)}  # detailed -> (dx, dy)
# The labels are sized so they are at least FOCUS_LEGIBLE_PX high on a FOCUS_CANVAS (CSS
# px; the overview's graph is 68 % of a window's height, so a small window) once the picture
# is fitted into it with the fit's padding: a hub's hundred neighbours fitted at 6 px were
# unreadable.
FOCUS_CANVAS = (1000.0, 480.0)
FOCUS_FIT_PADDING = 30.0
FOCUS_LEGIBLE_PX = 12.0
FOCUS_FONT = 12.0  # the graph's label size (elements.stylesheet), the smallest used
FOCUS_FONT_MAX = 60.0
FOCUS_NODE = 40.0  # a service's box (elements.stylesheet)
FOCUS_CHAR_EM = 0.62  # a label character's width, in ems (generous for a sans-serif)
FOCUS_METRICS_CHARS = 28  # the metrics line of a detailed label ("12.3/s · 0.0% · 45 ms")
FOCUS_MAX_ZOOM = 4.0  # the overview's maxZoom


def focus_layout(focus: str, callers: Iterable[str], callees: Iterable[str], *,
                 detailed: bool = True) -> tuple[dict[str, dict[str, float]], float]:
    """Model positions of a focused service and its neighbours, and the label size (model
    units) that keeps them legible once fitted (``FOCUS_LEGIBLE_PX``).

    A service that both calls and is called by the focus sits with the callers. A long side
    wraps into columns, as many rows as make the picture fitted largest into the canvas'
    shape. Labels grow until the fitted picture shows them large enough; a cell grows with
    its label, and its service's box does not, so a larger label is larger on screen.
    ``dashboard/assets/graph.js`` draws the same layout in the browser: keep the two in step.
    """
    left = sorted(set(callers) - {focus})
    right = sorted(set(callees) - {focus} - set(left))
    chars = min(40, max(len(n) for n in [focus, *left, *right]))
    lines = 1
    if detailed:
        chars, lines = max(chars, FOCUS_METRICS_CHARS), 2
    base_dx, base_dy = FOCUS_CELL[detailed]
    longest = max(len(left), len(right), 1)
    font = FOCUS_FONT
    rows, dx, dy = 1, base_dx, base_dy
    shown = 0.0  # the label's height on screen, fitted
    for _ in range(8):
        label_w = FOCUS_CHAR_EM * font * chars
        text_h = 1.25 * font * lines
        dx = max(base_dx, label_w + 30.0)
        dy = max(base_dy, FOCUS_NODE + 12.0 + text_h)
        best = (-1.0, 0)
        for r in range(1, longest + 1):
            cols = math.ceil(len(left) / r) + math.ceil(len(right) / r)
            width = cols * dx + max(FOCUS_NODE, label_w)
            height = (min(r, longest) - 1) * dy + FOCUS_NODE + 4.0 + text_h
            zoom = min(FOCUS_MAX_ZOOM, (FOCUS_CANVAS[0] - 2 * FOCUS_FIT_PADDING) / width,
                       (FOCUS_CANVAS[1] - 2 * FOCUS_FIT_PADDING) / height)
            best = max(best, (zoom, r))  # the largest; of equals, the most rows
        zoom, rows = best
        if font * zoom >= 0.97 * FOCUS_LEGIBLE_PX or font >= FOCUS_FONT_MAX \
                or font * zoom < 1.05 * shown:
            break  # legible, or as legible as wide labels get: a larger one only shrinks
            # the picture as much (the boxes would be specks beside their labels)
        shown = font * zoom
        font = min(FOCUS_FONT_MAX, FOCUS_LEGIBLE_PX / zoom)
    out = {focus: {"x": 0.0, "y": 0.0}}
    for side, names in ((-1.0, left), (1.0, right)):
        for i, name in enumerate(names):
            col, row = divmod(i, rows)
            in_col = min(rows, len(names) - col * rows)
            out[name] = {"x": side * dx * (col + 1), "y": (row - (in_col - 1) / 2) * dy}
    return out, math.floor(font * 10 + 0.5) / 10  # as graph.js rounds it
