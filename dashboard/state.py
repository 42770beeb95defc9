"""The shared dashboard state kept in the app's ``dcc.Store``, and how one refresh updates it.

The state holds the last good graph snapshot, when it was fetched, whether the collector
answered the last time (and since when it has not), the open incidents, team display names
and the stable node positions. ``fetch`` does the I/O; ``next_state`` is pure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dashboard import positions as P
from dashboard.client import ApiError, Source

State = dict[str, Any]


@dataclass
class Fetched:
    """What one refresh got from the collector; ``error`` set means the graph call failed."""

    graph: dict[str, Any] | None = None
    incidents: list[dict[str, Any]] | None = None
    incidents_error: str | None = None
    team_names: dict[str, str] | None = None
    paging: dict[str, Any] | None = None  # the collector's pager, when it has one
    error: str | None = None
    unreachable: bool = False
    notes: list[str] = field(default_factory=list)
    # The range the time control may show (``from``, ``to``, ``earliest_at``), when known.
    history: dict[str, Any] | None = None
    _compact: dict[str, Any] | None = field(default=None, repr=False)

    def compact(self) -> dict[str, Any]:
        """``compact_graph`` of the graph, made once (a shared fetch serves several states;
        the states treat it as read-only)."""
        if self._compact is None:
            self._compact = compact_graph(self.graph or {})
        return self._compact


def initial_state(collector_url: str, source: str = "Collector") -> State:
    """``source`` names what ``collector_url`` is, for messages: "Collector" or "Prometheus"."""
    return {
        "collector": collector_url,
        "source": source,
        "graph": None,
        "fetched_at": None,
        "reachable": None,
        "down_since": None,
        "error": None,
        "incidents": [],
        "incidents_error": None,
        "team_names": {},
        "paging_errors": [],
        "positions": P.empty_positions(),
        # Time travel: the past moment the graph and incidents show (None: live), and the
        # range the time control may show.
        "at": None,
        "history": None,
        "archived": None,  # the archived minute shown, beyond the retained statistics
    }


# The side reads of a refresh (incidents, history, paging, teams) go out beside the graph
# read, from these threads, when the source says it takes concurrent reads: one after another
# they took 100-250 ms more than the graph alone (the collector's /api/teams is ~70 ms at
# 1,238 services). Bounded: every visitor's reads share these workers.
_READERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="conway-read")


def _read(call: Callable[[], Any]) -> tuple[Any, ApiError | None]:
    try:
        return call(), None
    except ApiError as exc:
        return None, exc


def fetch(client: Source, window_s: float, at: float | None = None) -> Fetched:
    """One refresh's reads. The graph decides reachability; the rest is best effort. With
    ``at`` (a past moment) the graph is as it was then and the incidents are those open
    then (the answer carries both)."""
    out = Fetched()
    side: dict[str, Callable[[], Any]] = {"paging": client.paging, "teams": client.teams}
    if at is None:
        side["incidents"] = client.incidents
        side["history"] = lambda: client.history(window_s)
    if getattr(client, "concurrent_reads", False):
        futures = {k: _READERS.submit(_read, call) for k, call in side.items()}
        graph, error = _read(lambda: client.graph(window_s, at=at))
        done = {k: f.result() for k, f in futures.items()}  # before the client is closed
    else:
        graph, error = _read(lambda: client.graph(window_s, at=at))
        done = {} if error is not None else {k: _read(call) for k, call in side.items()}
    if error is not None:
        out.error = str(error)
        out.unreachable = error.unreachable
        return out
    out.graph = graph
    if at is not None:
        out.incidents = [i for i in graph.get("incidents", []) or [] if isinstance(i, dict)]
        hist = graph.get("history")
        out.history = dict(hist) if isinstance(hist, dict) else None
    else:
        out.incidents, incidents_error = done["incidents"]
        out.incidents_error = str(incidents_error) if incidents_error is not None else None
        out.history = done["history"][0]  # unknown: the time control keeps its last range
    # The pager's state is decoration: its incidents still show without it.
    out.paging = done["paging"][0]
    teams, _error = done["teams"]
    # Team display names are decoration too: the graph still shows team ids without them.
    out.team_names = None if teams is None else {
        str(t["name"]): str(t.get("display_name") or t["name"])
        for t in teams.get("teams", [])
        if isinstance(t, dict) and t.get("name")
    }
    return out


# A visitor's page and its first refresh ask for the same moment within milliseconds (the
# layout draws the first picture, the refresh fills the stores): each would fetch, parse and
# compact the whole graph (~0.3 s at 5,000 services) while the browser needs the other core.
SHARE_S = 0.5


@dataclass
class _Shared:
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Fetched | None = None


class SharedFetches:
    """Reads of the same source, window and moment started within ``share_s`` of each other
    are one read: a caller arriving while it runs waits for it, one arriving just after gets
    its result. Bounded: entries older than ``share_s`` are dropped as new ones come."""

    def __init__(self, share_s: float = SHARE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.share_s = share_s
        self.clock = clock
        self.shared = 0  # reads answered by another's fetch (counted, for tests and logs)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, float, float | None], _Shared] = {}

    def fetch(self, client: Source, window_s: float, at: float | None = None) -> Fetched:
        key = (str(getattr(client, "base_url", id(client))), float(window_s), at)
        now = self.clock()
        with self._lock:
            for k in [k for k, e in self._entries.items() if now - e.started > self.share_s]:
                del self._entries[k]
            entry = self._entries.get(key)
            mine = entry is None
            if entry is None:
                entry = self._entries[key] = _Shared(now)
        if mine:
            try:
                entry.result = fetch(client, window_s, at)
            finally:
                entry.done.set()
            return entry.result
        entry.done.wait()
        if entry.result is None:  # its fetch raised: read for ourselves
            return fetch(client, window_s, at)
        with self._lock:
            self.shared += 1
        return entry.result


def fetch_moment(client: Source, window_s: float, at: float | None,
                 prev: State | None, shared: SharedFetches | None = None
                 ) -> tuple[Fetched, float | None, str | None]:
    """One refresh's reads for the moment ``at`` (None: live): (what was fetched, the moment
    it shows, why ``at`` was refused). A moment the source refuses (outside its history: an
    old link) is not asked again; the live graph is shown with the refusal, for the bar.
    ``shared``: reads of the same moment at the same time are made once."""
    read = shared.fetch if shared is not None else fetch
    refused = (prev or {}).get("at_refused") or {}
    refusal: str | None = None
    if at is not None and refused.get("at") != at:
        fetched = read(client, window_s, at)
        if fetched.error is None or fetched.unreachable:
            return fetched, at, None
        refusal = fetched.error
    elif at is not None:
        refusal = str(refused.get("error") or "")
    return read(client, window_s, None), None, refusal


def next_state(prev: State | None, fetched: Fetched, collector_url: str, now: float,
               source: str = "Collector", at: float | None = None,
               refused: tuple[float, str] | None = None) -> State:
    """Merge one refresh into the state: keep the last good graph when the collector (or
    Prometheus, the ``source``) fails. ``at``: the past moment ``fetched`` shows (None:
    live); positions are kept either way, so nothing moves between now and then.
    ``refused``: a moment asked for and refused, with why (`fetch_moment`)."""
    state = dict(prev) if prev else initial_state(collector_url, source)
    state["at_refused"] = {"at": refused[0], "error": refused[1]} if refused else None
    state["collector"] = collector_url
    state["source"] = source
    if fetched.error is not None:
        state["reachable"] = False
        state["error"] = fetched.error
        if state.get("down_since") is None:
            state["down_since"] = now
        return state
    state["reachable"] = True
    state["error"] = None
    state["down_since"] = None
    graph = fetched.compact()
    state["graph"] = graph
    state["fetched_at"] = now
    moved = state.get("at") != at
    state["at"] = at
    archived = (fetched.graph or {}).get("archived") if at is not None else None
    state["archived"] = archived if isinstance(archived, dict) else None
    if fetched.history is not None:
        state["history"] = {k: fetched.history.get(k) for k in ("from", "to", "earliest_at")}
    if fetched.incidents is not None:
        state["incidents"] = [
            i for i in fetched.incidents if i.get("status", "open") == "open"
        ]
        state["incidents_error"] = None
    else:
        if moved:  # another moment's incidents must not pass for this one's
            state["incidents"] = []
        state["incidents_error"] = fetched.incidents_error
    if fetched.team_names is not None:
        state["team_names"] = fetched.team_names
    # Sinks the collector cannot deliver pages to: said on every page, since a page that
    # does not leave is what on call must not miss.
    state["paging_errors"] = [
        {k: s.get(k) for k in ("sink", "kind", "last_error", "queued", "failures")}
        for s in (fetched.paging or {}).get("sinks", []) or []
        if isinstance(s, dict) and s.get("last_error")]
    state["positions"] = P.assign(state.get("positions"), graph["nodes"])
    return state


def is_stale(state: State | None) -> bool:
    """A graph is on screen but the collector stopped answering."""
    return bool(state and state.get("graph") is not None and state.get("reachable") is False)


NODE_KEYS = ("id", "kind", "team", "health", "rate_rps", "error_ratio", "p50_ms", "p95_ms",
             "p99_ms", "up", "clock_ahead_s", "sampled_share", "no_traces", "mesh",
             "scraped_rps")
EDGE_KEYS = ("source", "target", "connection_type", "health", "rate_rps", "error_ratio",
             "p50_ms", "p95_ms", "p99_ms", "traced", "mesh")


def _round(value: Any) -> Any:
    # Four significant digits are plenty on screen and halve what the browser carries.
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def compact_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """The graph keys the dashboard shows, rounded: the store travels on every refresh."""
    return {
        "window_s": graph.get("window_s"),
        "generated_at": graph.get("generated_at"),
        "nodes": [
            {k: _round(n[k]) for k in NODE_KEYS if k in n}
            for n in graph.get("nodes", []) or []
            if isinstance(n, dict) and "id" in n
        ],
        "edges": [
            {k: _round(e[k]) for k in EDGE_KEYS if k in e}
            for e in graph.get("edges", []) or []
            if isinstance(e, dict) and "source" in e and "target" in e
        ],
    }


# The graph store the browser draws from (assets/graph.js): rows in these orders, edges naming
# their nodes by index, each node's box (``positions.group_of``) by index into ``groups``.
# About a fifth of the compact graph's JSON at 5,000 services.
WIRE_NODE_KEYS = ("id", "kind", "team", "health", "rate_rps", "error_ratio", "p95_ms",
                  "no_traces")
WIRE_EDGE_KEYS = ("connection_type", "rate_rps", "error_ratio", "p95_ms", "traced")


def wire_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """A ``compact_graph`` as the browser's graph store: what its elements need, as rows. An
    absent key is ``null`` (graph.js leaves it out again); an edge whose end is not a listed
    node names it instead of giving its index."""
    nodes = graph.get("nodes") or []
    orphans = sum(1 for n in nodes if n.get("kind") != "virtual" and not n.get("team"))
    groups: dict[str, int] = {}
    index: dict[Any, int] = {}
    rows = []
    for i, n in enumerate(nodes):
        group = groups.setdefault(P.group_of(n, orphans), len(groups))
        rows.append([n.get(k) for k in WIRE_NODE_KEYS] + [group])
        index.setdefault(n["id"], i)
    edges = [[index.get(e["source"], str(e["source"])),
              index.get(e["target"], str(e["target"]))]
             + [e.get(k) for k in WIRE_EDGE_KEYS] for e in graph.get("edges") or []]
    return {"generated_at": graph.get("generated_at"), "window_s": graph.get("window_s"),
            "groups": list(groups), "nodes": rows, "edges": edges}


def browser_state(state: State) -> State:
    """What of the state the browser's store holds: all but the graph, which travels once
    as the graph store (``wire_graph``) and stays here in the recent states by key."""
    return {k: v for k, v in state.items() if k != "graph"}
