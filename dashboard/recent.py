"""The states the refresh callback made lately, by key, in the dashboard's process.

The state store holds the whole graph (a megabyte at 1,238 services). Dash sends every
``Input``/``State`` from the browser with each request, so callbacks that only *read* the
state (the banners, the overview's graph) would upload it on every refresh, tap and search.
They take the state's key instead (a few bytes) and read the state here. A key not found
(the dashboard restarted, or many visitors pushed it out) is answered with no update: the
next refresh, at most one interval later, brings a key that is.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Any

# Each visitor's refresh adds one state a tick; a reading callback follows within a moment.
DEFAULT_SIZE = 128


class RecentStates:
    """A bounded, thread-safe map from key to state; the oldest key goes first."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._states: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, state: dict[str, Any]) -> str:
        """Keep ``state`` (never changed afterwards: callers treat it as read-only)."""
        key = secrets.token_hex(8)
        with self._lock:
            self._states[key] = state
            while len(self._states) > self.size:
                self._states.popitem(last=False)
        return key

    def get(self, key: object) -> dict[str, Any] | None:
        if not isinstance(key, str):
            return None
        with self._lock:
            return self._states.get(key)
