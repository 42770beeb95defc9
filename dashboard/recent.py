"""The states the refresh callback made lately, by key, in the dashboard's process.

The state store holds the whole graph (a megabyte at 1,238 services). Dash sends every
``Input``/``State`` from the browser with each request, so callbacks that only *read* the
state (the banners, the overview's graph) would upload it on every refresh, tap and search.
They take the state's key instead (a few bytes) and read the state here. A key not found
(the dashboard restarted, or many visitors pushed it out) is answered with no update: the
next refresh, at most one interval later, brings a key that is. The refresh also finds the
previous graph here (the browser's state store holds all but the graph), to keep it on screen
while the collector does not answer. Memory: at most ``DEFAULT_SIZE`` states whose graphs hold
at most ``DEFAULT_MAX_ELEMENTS`` nodes and edges (~90 MB); ``evicted`` counts what went.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Any

# Each visitor's refresh adds one state a tick; a reading callback follows within a moment.
DEFAULT_SIZE = 128
# And the graphs they hold are bounded: about 460 B of Python objects per node or edge (a
# 5,000-service graph with 15,000 calls is ~9 MB), so 128 states of it were over a gigabyte.
# A graph shared by several states (one read serving a page and its refresh) counts once.
DEFAULT_MAX_ELEMENTS = 200_000  # ~90 MB


def _elements(state: dict[str, Any]) -> tuple[int, int]:
    graph = state.get("graph")
    if not isinstance(graph, dict):
        return 0, 0  # no graph yet (or the collector never answered)
    return id(graph), len(graph.get("nodes") or ()) + len(graph.get("edges") or ())


class RecentStates:
    """A bounded, thread-safe map from key to state; the oldest key goes first, when there
    are more than ``size`` or their graphs hold more than ``max_elements`` nodes and edges
    (the newest state is always kept)."""

    def __init__(self, size: int = DEFAULT_SIZE,
                 max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        self.size = size
        self.max_elements = max_elements
        self.evicted = 0
        self._states: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._graphs: dict[int, list[int]] = {}  # id(graph) -> [states holding it, elements]
        self._held = 0
        self._lock = threading.Lock()

    def put(self, state: dict[str, Any]) -> str:
        """Keep ``state`` (never changed afterwards: callers treat it as read-only)."""
        key = secrets.token_hex(8)
        gid, n = _elements(state)
        with self._lock:
            self._states[key] = state
            held = self._graphs.setdefault(gid, [0, n])
            held[0] += 1
            if held[0] == 1:
                self._held += n
            while len(self._states) > 1 and (len(self._states) > self.size
                                             or self._held > self.max_elements):
                _key, old = self._states.popitem(last=False)
                self.evicted += 1
                ogid, _n = _elements(old)
                entry = self._graphs[ogid]
                entry[0] -= 1
                if entry[0] == 0:
                    self._held -= entry[1]
                    del self._graphs[ogid]
        return key

    def held(self) -> tuple[int, int]:
        """(states, nodes and edges of their graphs) held now."""
        with self._lock:
            return len(self._states), self._held

    def get(self, key: object) -> dict[str, Any] | None:
        if not isinstance(key, str):
            return None
        with self._lock:
            return self._states.get(key)
