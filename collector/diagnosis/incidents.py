"""Incidents: one per root-cause service, opened, updated, resolved; kept in SQLite.

``IncidentManager.evaluate(causes, now)`` takes the root causes (with blast radius) one
evaluation tick found at ``now``:

- a root cause with no open incident for its service opens one: who to page comes
  from the ownership helper (``owner_of``), "what changed" from the service's nearest
  ``service.version`` change;
- an open incident whose root cause is still there is updated (impacted services are merged,
  the newest evidence for each replacing the older, evidence and confidence replaced,
  ``updated_at``). One service's fault often shows as more
  than one kind over its life (a process that was down leaves refused calls in the window
  after it is back, which read as errors): that is one incident for the team to page, whose
  kind is the most severe seen (down, then errors, then latency), each change in its history;
- an open incident whose root cause has been absent for ``quiet_s`` (default 30 s) resolves;
- an open incident whose root cause has been absent ``MOVE_AFTER_S`` (3 s) and is now listed
  as *impacted* by a root cause found this tick resolves then, with a ``moved`` event naming
  where the verdict went (its page was wrong; the pager resolves it and pages the new root
  cause's team).

``IncidentStore`` persists incidents and their history (opened / updated / resolved events) in
SQLite, WAL mode, at ``data_dir/incidents.sqlite3`` — or in memory when there is no data dir.
On start the manager loads them; open ones stay open until the lifecycle resolves them, with
``quiet_s`` of grace from the restart for their root cause to show again. The store keeps at
most ``MAX_INCIDENTS`` incidents (oldest resolved ones go first) and ``MAX_HISTORY`` events
per incident.

Writes never stop the lifecycle: a write that fails (a full disk) leaves the incident in memory
and pending; the failure is logged once per episode with SQLite's error, counted
(``writes.write_errors``, ``conway_state_write_errors_total{file="incidents.sqlite3"}``) and shown
by ``/healthz`` (``writes.write_error``); every evaluation (``flush``) and every later write retries
what is pending, so the file catches up once there is room again. Start-up refuses a file
that cannot be used (not SQLite, a damaged page: ``PRAGMA quick_check``, a directory) with an
`IncidentStoreError` naming it (``--reset-state`` moves it aside); a single unreadable row (bad
JSON, no ``root_cause``) is skipped with a warning and counted (``skipped_rows``), left in the
file; a zero-byte file starts empty with a warning.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.checkpoint import (
    WriteFailures,
    check_state_file,
    open_state_db,
    transaction,
)
from collector.diagnosis.assessment import KIND_SEVERITY, SHARED_HOST, RootCause
from collector.model import Snapshot
from collector.stats import VersionLog
from collector.vocabulary import health_rank

QUIET_S = 30.0
MOVE_AFTER_S = 3.0  # an incident whose root cause became another's victim moves after this
MAX_INCIDENTS = 1_000
MAX_HISTORY = 100
MAX_IMPACTED = 200
HISTORY_LISTED = 20  # events per incident in the JSON (the store keeps MAX_HISTORY)
MAX_GRAPH_NODES = 60  # nodes of an incident's stored graph (the root cause first)
MAX_GRAPH_EDGES = 300
DB_NAME = "incidents.sqlite3"
NO_HOST_OWNER = "no owner — platform"

OwnerLookup = Callable[[str], dict[str, Any] | None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    started_at REAL NOT NULL, updated_at REAL NOT NULL, resolved_at REAL, last_seen REAL NOT NULL,
    body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_started ON incidents (started_at);
CREATE TABLE IF NOT EXISTS incident_history (
    incident_id TEXT NOT NULL, at REAL NOT NULL, event TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_incident ON incident_history (incident_id, at);
"""


@dataclass
class Incident:
    id: str
    status: str
    started_at: float
    updated_at: float
    resolved_at: float | None
    last_seen: float
    root_cause: dict[str, Any]
    impacted: list[dict[str, Any]]
    page: dict[str, Any]
    confidence: float
    version_change: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    # The root cause, its blast radius and their calls, with the worst numbers the graph
    # showed while the incident was open: kept with it, so it survives restarts and the
    # traffic's retention. See ``incident_graph``.
    graph: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return str(self.root_cause["service"])

    def body(self) -> dict[str, Any]:
        return {"root_cause": self.root_cause, "impacted": self.impacted, "page": self.page,
                "confidence": self.confidence, "version_change": self.version_change,
                "graph": self.graph}

    def detail_json(self) -> dict[str, Any]:
        """``to_json`` with every stored history event and the stored graph
        (``GET /api/incidents/{id}``)."""
        return {**self.to_json(), "history": list(self.history), "graph": self.graph}

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "started_at": self.started_at,
                "updated_at": self.updated_at, "resolved_at": self.resolved_at,
                "root_cause": self.root_cause, "impacted": self.impacted, "page": self.page,
                "confidence": self.confidence, "version_change": self.version_change,
                "history": self.history[-HISTORY_LISTED:]}


class IncidentStoreError(ValueError):
    """The incidents file cannot be used; ``path`` names it (``--reset-state`` may move it)."""

    def __init__(self, message: str, path: Path | None) -> None:
        super().__init__(message)
        self.path = path


class IncidentStore:
    """SQLite persistence. ``path`` None keeps everything in memory (gone on restart).

    Writes that fail stay pending (see the module doc); ``writes.write_error`` is SQLite's error
    while they fail, None when the file is up to date."""

    def __init__(self, path: Path | None = None, max_incidents: int = MAX_INCIDENTS,
                 max_history: int = MAX_HISTORY) -> None:
        self.path = path
        self.max_incidents = max_incidents
        self.max_history = max_history
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"incident store: cannot create data dir {path.parent}: {exc}; "
                                 f"pass a writable --data-dir") from exc
            try:
                check_state_file(path, "the incidents file")
            except OSError as exc:
                raise IncidentStoreError(f"{exc}; start with --reset-state to move it aside "
                                         f"(or use another --data-dir)", path) from None
        self._lock = threading.Lock()
        try:
            self._db = open_state_db(path, _SCHEMA)
        except sqlite3.Error as exc:
            raise IncidentStoreError(
                f"the incidents file {path} cannot be used ({exc}); start with --reset-state "
                f"to move it aside, or pass a --data-dir Conway may write to", path) from exc
        self.pruned = 0
        self.skipped_rows = 0  # unreadable rows left out by `load`
        self.writes = WriteFailures()
        # What failed to be written, retried by every write and `flush`: incident id ->
        # (the incident, whose current state is written; its history events not yet written).
        self._pending: dict[str, tuple[Incident, list[tuple[float, str, str]]]] = {}
        self._forget: set[str] = set()  # ids to delete

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load(self) -> list[Incident]:
        """Every stored incident, newest first, with its history (oldest event first). A row
        that cannot be read (bad JSON, no ``root_cause``) is skipped, counted in
        ``skipped_rows`` and named in a warning; a file that cannot be read at all raises
        `IncidentStoreError`."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, status, started_at, updated_at, resolved_at, last_seen, body "
                    "FROM incidents ORDER BY started_at DESC").fetchall()
                hist_rows = self._db.execute(
                    "SELECT incident_id, at, event, body FROM incident_history "
                    "ORDER BY at").fetchall()
        except sqlite3.Error as exc:
            raise IncidentStoreError(
                f"the incidents file {self.path} cannot be read ({exc}); start with "
                f"--reset-state to move it aside (or use another --data-dir)", self.path) from exc
        skipped: dict[str, str] = {}  # id -> what is wrong
        bad_rows = 0
        hist: dict[str, list[dict[str, Any]]] = {}
        for iid, at, event, body in hist_rows:
            try:
                detail = json.loads(body)
                if not isinstance(detail, dict):
                    raise ValueError("not a JSON object")
                hist.setdefault(iid, []).append({"at": at, "event": event, **detail})
            except (ValueError, TypeError) as exc:
                bad_rows += 1
                skipped.setdefault(f"history of {iid}", _why(exc))
        out = []
        for iid, status, started, updated, resolved, last_seen, body in rows:
            try:
                b = json.loads(body)
                if not isinstance(b, dict) or not isinstance(b.get("root_cause"), dict):
                    raise KeyError("root_cause")
                root = b["root_cause"]
                if not isinstance(root.get("service"), str) or "kind" not in root:
                    raise KeyError("root_cause.service or root_cause.kind")
                if not (isinstance(b["impacted"], list) and isinstance(b["page"], dict)
                        and isinstance(b["confidence"], int | float)):
                    raise TypeError("impacted, page or confidence of the wrong type")
                graph = b.get("graph")
                out.append(Incident(iid, status, started, updated, resolved, last_seen,
                                    root, b["impacted"], b["page"], b["confidence"],
                                    b.get("version_change"), hist.get(iid, []),
                                    graph if isinstance(graph, dict) else None))
            except (ValueError, TypeError, KeyError) as exc:
                bad_rows += 1
                skipped[str(iid)] = _why(exc)
        self.skipped_rows = bad_rows
        if skipped:
            listed = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
            more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
            print(f"conway collector: warning: the incidents file {self.path}: skipped "
                  f"{bad_rows} unreadable rows, left in the file ({listed}{more})",
                  file=sys.stderr, flush=True)
        return out

    def save(self, inc: Incident, event: str | None = None,
             detail: dict[str, Any] | None = None, at: float | None = None) -> None:
        """Write ``inc`` (and ``event``, if given, to its history, at ``at``: by default its
        ``updated_at``) with whatever earlier writes failed; a failure leaves it all pending
        (never raises for SQLite errors)."""
        with self._lock:
            _, events = self._pending.setdefault(inc.id, (inc, []))
            if event is not None:
                events.append((inc.updated_at if at is None else at, event,
                               json.dumps(detail or {})))
                del events[: -self.max_history]
            self._write()

    def flush(self) -> bool:
        """Retry what failed to be written; True when the file is up to date."""
        with self._lock:
            if self._pending or self._forget:
                self._write()
            return not (self._pending or self._forget)

    def forget(self, ids: Sequence[str]) -> None:
        """Delete these incidents and their history (now or, if that fails, later)."""
        with self._lock:
            for iid in ids:
                self._pending.pop(iid, None)
            self._forget.update(ids)
            self._write()
        self.pruned += len(ids)

    @property
    def pending(self) -> int:
        """Incidents with writes not yet in the file."""
        return len(self._pending) + len(self._forget)

    def _write(self) -> None:
        db = self._db
        try:
            with transaction(db):
                for iid, (inc, events) in self._pending.items():
                    db.execute(
                        "INSERT OR REPLACE INTO incidents (id, service, kind, status, "
                        "started_at, updated_at, resolved_at, last_seen, body) "
                        "VALUES (?,?,?,?,?,?,?,?,?)",
                        (iid, inc.root_cause["service"], inc.root_cause["kind"], inc.status,
                         inc.started_at, inc.updated_at, inc.resolved_at, inc.last_seen,
                         json.dumps(inc.body())))
                    if events:
                        db.executemany("INSERT INTO incident_history VALUES (?,?,?,?)",
                                       [(iid, *ev) for ev in events])
                        db.execute(
                            "DELETE FROM incident_history WHERE incident_id = ? AND rowid NOT "
                            "IN (SELECT rowid FROM incident_history WHERE incident_id = ? "
                            "ORDER BY at DESC LIMIT ?)", (iid, iid, self.max_history))
                for iid in self._forget:
                    db.execute("DELETE FROM incidents WHERE id = ?", (iid,))
                    db.execute("DELETE FROM incident_history WHERE incident_id = ?", (iid,))
        except (sqlite3.Error, OSError) as exc:
            if self.writes.failed(exc):  # once per episode: a full disk stays full a while
                print(f"conway collector: cannot write incidents to {self.path}: {exc}; they "
                      f"are kept in memory and written when that works again",
                      file=sys.stderr, flush=True)
            return
        ended = self.writes.succeeded()
        if ended is not None:
            print(f"conway collector: incidents written to {self.path} again (after "
                  f"{ended[0]} failed writes: {ended[1]})", file=sys.stderr, flush=True)
        self._pending.clear()
        self._forget.clear()


class IncidentManager:
    """The lifecycle. Not thread-safe by itself: callers hold ``lock``."""

    def __init__(self, store: IncidentStore, versions: VersionLog | None = None,
                 owner_of: OwnerLookup | None = None, quiet_s: float = QUIET_S,
                 now: float | None = None) -> None:
        if quiet_s < 0:
            raise ValueError("incidents: quiet_s must be >= 0 seconds")
        self.store = store
        self.versions = versions
        self.owner_of = owner_of
        self.quiet_s = quiet_s
        self.lock = threading.RLock()
        self._all: list[Incident] = store.load()
        for inc in self._all:
            if inc.status == "open" and now is not None:
                # Restart grace: the root cause gets quiet_s to show again before resolving.
                inc.last_seen = max(inc.last_seen, now)

    def open(self) -> list[Incident]:
        return [i for i in self._all if i.status == "open"]

    def incidents(self, status: str | None = None,
                  limit: int = MAX_INCIDENTS) -> list[Incident]:
        """Newest first."""
        with self.lock:
            out = [i for i in self._all if status is None or i.status == status]
        out.sort(key=lambda i: i.started_at, reverse=True)
        return out[:limit]

    def incidents_json(self, status: str | None = None,
                       limit: int = MAX_INCIDENTS) -> list[dict[str, Any]]:
        """``incidents`` as the API serves them, taken under the lifecycle's lock."""
        with self.lock:
            return [i.to_json() for i in self.incidents(status, limit)]

    def get(self, incident_id: str) -> Incident | None:
        with self.lock:
            return next((i for i in self._all if i.id == incident_id), None)

    def detail_json(self, incident_id: str) -> dict[str, Any] | None:
        with self.lock:
            inc = next((i for i in self._all if i.id == incident_id), None)
            return inc.detail_json() if inc is not None else None

    def note(self, incident_id: str, event: str, summary: str, now: float) -> bool:
        """Add ``event`` to an incident's history (the pager's ``paged``); False when there
        is no such incident any more."""
        with self.lock:
            inc = next((i for i in self._all if i.id == incident_id), None)
            if inc is None:
                return False
            inc.history.append({"at": now, "event": event, "summary": summary})
            del inc.history[: -self.store.max_history]
            self.store.save(inc, event, {"summary": summary}, at=now)
            return True

    def evaluate(self, causes: Sequence[RootCause], now: float,
                 snap: Snapshot | None = None) -> None:
        with self.lock:
            self.store.flush()  # what failed to be written before (a full disk) catches up
            open_by_key = {i.key: i for i in self.open()}
            present: set[str] = set()
            for cause in causes:
                key = cause.service
                if key in present:
                    continue
                present.add(key)
                inc = open_by_key.get(key)
                if inc is None:
                    inc = self._open(cause, now)
                    if snap is not None:
                        inc.graph = incident_graph(snap, inc, now)
                        self.store.save(inc)
                else:
                    self._update(inc, cause, now)
                    if snap is not None:
                        graph = incident_graph(snap, inc, now, inc.graph)
                        old = inc.graph or {}
                        if (graph["nodes"], graph["edges"]) != (old.get("nodes"),
                                                                old.get("edges")):
                            inc.graph = graph  # worse numbers or a new victim: kept
                            self.store.save(inc)
            # A root cause now listed as impacted by another: the verdict moved (checkout's
            # errors were payment's, once payment's spans showed). The old page is wrong; it
            # resolves MOVE_AFTER_S after the old root cause was last found (a verdict that
            # flips for a tick or two must not page twice) rather than after quiet_s, and
            # says where the verdict went.
            victim_of = {i.service: c.service for c in causes for i in c.impacted}
            for key, inc in open_by_key.items():
                if key in present:
                    continue
                if key in victim_of and now - inc.last_seen >= MOVE_AFTER_S:
                    inc.status, inc.resolved_at, inc.updated_at = "resolved", now, now
                    self._log(inc, "moved", f"verdict moved to {victim_of[key]}: {key} is "
                                            f"impacted by it, not a root cause")
                elif now - inc.last_seen >= self.quiet_s:
                    inc.status, inc.resolved_at, inc.updated_at = "resolved", now, now
                    self._log(inc, "resolved", f"no sign of it for {now - inc.last_seen:.0f} s")
            if len(self._all) > self.store.max_incidents:
                # Chosen in memory (it holds all the file does), so memory stays bounded even
                # while the file cannot be written.
                resolved = sorted((i for i in self._all if i.status == "resolved"),
                                  key=lambda i: i.started_at, reverse=True)
                dropped = {i.id for i in resolved[self.store.max_incidents:]}
                if dropped:
                    self.store.forget(sorted(dropped))
                    self._all = [i for i in self._all if i.id not in dropped]

    def _open(self, cause: RootCause, now: float) -> Incident:
        service = cause.service
        owner = self.owner_of(service) if self.owner_of else None
        team = cause.team or (owner or {}).get("team")
        page = {"team": team,
                "on_call": (owner or {}).get("on_call"),
                "channel": (owner or {}).get("channel"),
                "runbook": (owner or {}).get("runbook")}
        if cause.kind == SHARED_HOST and team is None:
            # No Resource in the catalog owns the host: the platform's, named as unowned.
            page["fallback"] = NO_HOST_OWNER
        change = None
        if self.versions is not None and cause.kind != SHARED_HOST:
            change = self.versions.change_near(service, now)
        inc = Incident(uuid.uuid4().hex[:16], "open", now, now, None, now,
                       _root(cause, team), [i.to_json() for i in cause.impacted[:MAX_IMPACTED]],
                       page, cause.confidence, change)
        self._all.append(inc)
        self._log(inc, "opened", cause.evidence["summary"])
        return inc

    def _update(self, inc: Incident, cause: RootCause, now: float) -> bool:
        """Merge this tick's finding into ``inc``; True when its blast radius grew."""
        before = {d["service"]: n for n, d in enumerate(inc.impacted)}
        for impact in cause.impacted:
            d = impact.to_json()
            if impact.service in before:
                inc.impacted[before[impact.service]] = d  # the newest evidence
            elif len(inc.impacted) < MAX_IMPACTED:
                inc.impacted.append(d)
        added = {d["service"] for d in inc.impacted} - set(before)
        team = inc.root_cause.get("team") or cause.team
        old_kind = inc.root_cause["kind"]
        inc.root_cause = _root(cause, team)
        if KIND_SEVERITY.get(old_kind, 9) < KIND_SEVERITY.get(cause.kind, 9):
            inc.root_cause["kind"] = old_kind
        elif old_kind != cause.kind:
            self._log(inc, "updated", f"now {cause.kind} (was {old_kind})")
        if inc.page.get("team") is None and team:
            inc.page["team"] = team
        if inc.version_change is None and self.versions is not None:
            inc.version_change = self.versions.change_near(inc.root_cause["service"],
                                                           inc.started_at)
        old_conf, inc.confidence = inc.confidence, cause.confidence
        inc.last_seen = inc.updated_at = now
        if added:
            self._log(inc, "updated", f"now also impacts {', '.join(sorted(added))}")
        elif abs(inc.confidence - old_conf) >= 0.1:
            self._log(inc, "updated", f"confidence {old_conf:.2f} -> {inc.confidence:.2f}")
        else:
            self.store.save(inc)
        return bool(added)

    def _log(self, inc: Incident, event: str, summary: str) -> None:
        inc.history.append({"at": inc.updated_at, "event": event, "summary": summary})
        del inc.history[: -self.store.max_history]
        self.store.save(inc, event, {"summary": summary})


def incident_graph(snap: Snapshot, inc: Incident, now: float,
                   before: dict[str, Any] | None = None) -> dict[str, Any]:
    """The part of the graph an incident is about: its root cause (for a shared host, the
    services it slowed), its impacted services, and the calls among them, at most
    ``MAX_GRAPH_NODES`` nodes. Their numbers are the worst ``snap`` or the graph stored
    ``before`` showed (highest rate, error ratio and p95, worst health) while it was open: the
    graph of the incident, kept with it, not of whatever the traffic is later."""
    root = str(inc.root_cause["service"])
    roles: dict[str, str] = {}
    if inc.root_cause.get("kind") == SHARED_HOST:
        for name in inc.root_cause.get("evidence", {}).get("services", []) or []:
            roles[str(name)] = "slowed"
    else:
        roles[root] = "root"
    for d in inc.impacted:
        roles.setdefault(str(d["service"]), "impacted")
    names = list(roles)[:MAX_GRAPH_NODES]
    old_nodes = {n["id"]: n for n in (before or {}).get("nodes", [])}
    old_edges = {(e["source"], e["target"]): e for e in (before or {}).get("edges", [])}
    nodes = []
    for name in names:
        n = snap.nodes.get(name)
        now_seen = {"id": name, "role": roles[name],
                    "kind": n.kind if n is not None else "service",
                    "team": n.team if n is not None else None,
                    **_stats(n.health, n.rate_rps, n.error_ratio, n.p95_ms)} \
            if n is not None else {"id": name, "role": roles[name], "kind": "service",
                                   "team": None, **_stats("unknown", None, None, None)}
        nodes.append(_worst(old_nodes.get(name), now_seen))
    inside = set(names)
    edges = []
    for (src, dst), e in sorted(snap.edges.items()):
        if src in inside and dst in inside:
            edges.append(_worst(old_edges.pop((src, dst), None), {
                "source": src, "target": dst,
                **_stats(e.health, e.rate_rps, e.error_ratio, e.p95_ms)}))
    edges += [e for k, e in old_edges.items() if k[0] in inside and k[1] in inside]
    return {"captured_at": (before or {}).get("captured_at", now), "updated_at": now,
            "nodes": nodes, "edges": edges[:MAX_GRAPH_EDGES],
            "left_out": max(0, len(roles) - len(names))}


def _stats(health: str, rate: float | None, errors: float | None,
           p95: float | None) -> dict[str, Any]:
    return {"health": health or "unknown", "rate_rps": _num(rate), "error_ratio": _num(errors),
            "p95_ms": _num(p95)}


def _worst(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return new
    out = dict(new)
    for k in ("rate_rps", "error_ratio", "p95_ms"):
        vals = [v for v in (old.get(k), new.get(k)) if isinstance(v, int | float)]
        out[k] = max(vals) if vals else None
    if health_rank(old.get("health")) > health_rank(new["health"]):
        out["health"] = old["health"]
    return out


def _num(v: float | None) -> float | None:
    return round(float(v), 4) if v is not None and v == v else None


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]}" if exc.args else "a field is missing"
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON ({exc.msg})"
    return f"{type(exc).__name__}: {exc}"


def _root(cause: RootCause, team: str | None) -> dict[str, Any]:
    out = {"service": cause.service, "team": team, "kind": cause.kind,
           "evidence": dict(cause.evidence)}
    if cause.host is not None:
        out["host"] = cause.host
    return out
