"""Fault campaign: can an on-call engineer be paged by this?

Against the real demo processes (a running ``make demo``, or one this bench starts through
``scripts/demo.py`` and stops after), it injects a plan of faults through the demo control API,
one after another, and watches ``GET /api/incidents`` every 0.25 s the whole time, as a person
watching the dashboard would: every incident id, when it was first seen open, its impacted list
over time, when it was seen resolved. All times are this process's clock, to what the API shows.

The plan (``--seed`` shuffles it): errors and latency on every service, ``down`` on half of
them and a bad deploy on the other half, errors and latency on the virtual dependencies
(``orders`` = PostgreSQL, ``redis``), a CPU hog on a few services, and two faults at once on
services with no call path between them. Two consecutive faults never share a target, and a
fault waits until no incident naming its target is still open.

Scoring, per fault, over the incidents first seen from its injection until the next one:

- right root cause: the first incident opened names the faulted target (two at once: the first
  two name both; a CPU hog: it is one ``shared-host`` incident);
- right team: that incident's ``page.team`` is the target's owner in the catalog;
- false pages: every other incident opened in that time (a ``shared-host`` one counts unless
  the fault is a CPU hog), per team paged;
- time to root cause: injection -> the right incident first seen (None past ``--hold``),
  and split in two: injection -> the third request the fault failed, slowed or refused, as the
  demo itself recorded it (every service's ``GET /admin/faults``, ``evidence``; the fewest a
  page needs, so the demo's traffic rate sets it), and that request -> the incident seen (the
  collector's own part; a CPU hog fails nothing by itself, so it has neither);
- time to complete blast radius: root cause seen -> its impacted list holds every expected
  service (None if not by the end of the hold);
- time to resolve: clear -> the right incident seen resolved (watched through later faults).

Ground truth comes from ``catalog/topology.yaml`` and ``catalog/catalog-info.yaml`` only, never
from the collector's code. ``bench/rca.py`` simulates traces from the analysis' own model of
propagation, so it cannot catch that model being wrong; this bench asks the topology what
*must* happen: a failure propagates up every chain of ``required: true`` calls (an optional
call's failure is absorbed by a fallback), latency reaches every transitive caller, a topic's
consumer (email, reading order-events) passes neither its errors nor its latency back to the
publisher (its messages wait in the queue instead), and a team is the ``spec.owner`` of the
Component or Resource of that name (none in the catalog: None).
What the services themselves measured is printed beside each fault ("felt"): every service's
own request-duration histogram, scraped from its ``/metrics`` once a second by this bench (not
through the collector), over the 15 s before the fault and while it lasted — the users' p95 at
the entry, and which services slowed (median x1.5 or p95 x2). A CPU hog on a quiet host may
slow nobody; the summary then also gives the right-root-cause share counting such a hog that
opened nothing as right, beside the strict one (which counts it a miss).
It prints figures and asserts nothing; it exits 1 only when it could not run.

Run: .venv/bin/python bench/campaign.py [--burner] [--faults N] [--only errors,latency]
     .venv/bin/python bench/campaign.py --fault-free 600 --browsers 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from benchlib import stop, wait_http
from detect import answers, quantile
from prometheus_client.parser import text_string_to_metric_families

from collector.diagnosis.compare import LatencyRise, RatioRise
from collector.mesh import histogram_quantile
from demo_services.control_client import ControlClient, ControlError
from demo_services.defaults import admin_token

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "catalog" / "topology.yaml"
CATALOG = ROOT / "catalog" / "catalog-info.yaml"
ENTRY = "frontend"  # the load generator's only door into the shop
POLL_S = 0.25
FULL_POLL_EVERY = 8  # every 8th poll lists resolved incidents too (the rest: open ones only)
LATE_S = 2.0  # held after the root cause and blast radius are complete, for late extra pages
QUIET_MAX_S = 90.0  # longest wait for a target's earlier incident to resolve before injecting
RESOLVE_WAIT_S = 90.0
HOST_KIND = "shared-host"
NO_OWNER, PLATFORM = "(no owner)", "(platform)"
KINDS = ("errors", "latency", "down", "bad-deploy", "database", "cpu-hog", "two-at-once")
ERRORS, LATENCY = {"error_rate": 0.5}, {"latency_ms": 400.0}
CPU_HOG = {"cpu_hog": 2}
CPU_HOG_SERVICES = 3
PAIRS = (("errors", "errors"), ("errors", "latency"), ("latency", "errors"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
               "--disable-backgrounding-occluded-windows", "--window-size=1400,1000")
DASHBOARD_PAGES = ("/", "/teams", "/services/checkout")
# What the services measured themselves (``FeltWatcher``): each one's own request-duration
# histogram, scraped from its /metrics once a second, over the 15 s before a fault and from 2 s
# after it (a hog's threads take a moment) until it is cleared. A service "slowed" when its
# median rose x1.5 or its p95 x2 with at least 5 requests in both periods.
FELT_METRIC = "http_server_request_duration_seconds"
FELT_EVERY_S = 1.0
FELT_KEEP_S = 300.0
FELT_BEFORE_S = 15.0
FELT_SKIP_S = 2.0
FELT_MIN_REQUESTS = 5
FELT_P50_X, FELT_P95_X = 1.5, 2.0
# The demo's own record of when a fault showed (``GET /admin/faults`` of every service,
# ``demo_services.faults.FaultEvidence``, which keeps each episode's first five): a page needs
# at least this many failed or slowed requests (the collector's rule, read from it, not
# judged by it), so the time until the demo's traffic had served that many is a floor no
# detector with that rule beats; TTRC minus it is the collector's own part.
EVIDENCE_EVENTS = max(RatioRise().min_events, LatencyRise().min_slow)
TARGETS = {"right RC": ">= 95 %", "false pages": "<= 1 per 20 faults", "TTRC p95": "<= 2 s",
           "blast p95": "<= 2 s"}


# --- ground truth: the topology and the catalog ---------------------------------------------

@dataclass(frozen=True, slots=True)
class Call:
    caller: str
    callee: str
    required: bool


@dataclass(frozen=True, slots=True)
class Shop:
    services: tuple[str, ...]
    virtual: tuple[str, ...]
    versions: dict[str, str]
    calls: tuple[Call, ...]
    owners: dict[str, str]  # catalog entity name -> team, for those with an owner
    # (publisher, consumer) through a topic: a path between them, but no caller's wait.
    deliveries: tuple[tuple[str, str], ...] = ()

    def callers(self, target: str, required_only: bool) -> set[str]:
        """Every service reaching ``target`` through calls (each required, if asked)."""
        found: set[str] = set()
        todo = [target]
        while todo:
            node = todo.pop()
            for c in self.calls:
                if c.callee == node and c.caller not in found and (c.required or not required_only):
                    found.add(c.caller)
                    todo.append(c.caller)
        return found

    def reached(self, start: str) -> set[str]:
        """Every service ``start`` reaches through calls or through the topics' messages."""
        edges = [(c.caller, c.callee) for c in self.calls] + list(self.deliveries)
        found, todo = {start}, [start]
        while todo:
            node = todo.pop()
            for caller, callee in edges:
                if caller == node and callee not in found:
                    found.add(callee)
                    todo.append(callee)
        return found

    def connected(self, a: str, b: str) -> bool:
        return b in self.reached(a) or a in self.reached(b)

    def team(self, name: str) -> str | None:
        return self.owners.get(name)


def load_shop(topology: Path = TOPOLOGY, catalog: Path = CATALOG) -> Shop:
    topo = yaml.safe_load(topology.read_text(encoding="utf-8"))
    default_version = str(topo.get("defaults", {}).get("version", "1.0.0"))
    services: dict[str, Any] = topo["services"]
    calls = tuple(Call(name, str(call["to"]), bool(call.get("required", True)))
                  for name, spec in services.items()
                  for route in spec.get("routes") or []
                  for call in route.get("calls") or [])
    versions = {name: str(spec.get("version", default_version))
                for name, spec in services.items()}
    published = {(name, str(topic)) for name, spec in services.items()
                 for route in spec.get("routes") or [] for topic in route.get("publishes") or []}
    deliveries = tuple(sorted(
        (publisher, consumer) for publisher, topic in published
        for consumer, spec in services.items()
        if any(str(c.get("topic")) == topic for c in spec.get("consumes") or [])))
    return Shop(tuple(services), tuple(topo.get("virtual") or {}), versions, calls,
                catalog_owners(catalog), deliveries)


def catalog_owners(catalog: Path) -> dict[str, str]:
    """Component and Resource name -> owner, with "group:" and a namespace stripped."""
    owners: dict[str, str] = {}
    for doc in yaml.safe_load_all(catalog.read_text(encoding="utf-8")):
        if not isinstance(doc, dict) or doc.get("kind") not in ("Component", "Resource"):
            continue
        owner = (doc.get("spec") or {}).get("owner")
        if isinstance(owner, str) and owner:
            owners[str(doc["metadata"]["name"])] = owner.split(":", 1)[-1].split("/")[-1]
    return owners


# --- the plan --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Injection:
    target: str
    update: dict[str, Any]
    effect: str  # "errors" (propagates up required calls), "latency" (every caller), "hog"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    injections: tuple[Injection, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(i.target for i in self.injections)

    def label(self) -> str:
        return " + ".join(f"{i.target}({'/'.join(f'{k}={v}' for k, v in i.update.items())})"
                          if self.kind in ("database", "two-at-once") else i.target
                          for i in self.injections)


def one(kind: str, target: str, update: dict[str, Any], effect: str) -> Fault:
    return Fault(kind, (Injection(target, update, effect),))


def build_plan(shop: Shop, rng: random.Random) -> list[Fault]:
    services = list(shop.services)
    rng.shuffle(services)
    half = len(services) // 2
    plan = [one("errors", s, ERRORS, "errors") for s in shop.services]
    plan += [one("latency", s, LATENCY, "latency") for s in shop.services]
    plan += [one("down", s, {"down": True}, "errors") for s in services[:half]]
    plan += [one("bad-deploy", s, {"version": f"{shop.versions[s]}-bad"}, "errors")
             for s in services[half:]]
    plan += [one("database", v, upd, eff) for v in shop.virtual
             for upd, eff in ((ERRORS, "errors"), (LATENCY, "latency"))]
    plan += [one("cpu-hog", s, CPU_HOG, "hog") for s in rng.sample(services, CPU_HOG_SERVICES)]
    return plan + two_at_once(shop, rng)


def two_at_once(shop: Shop, rng: random.Random) -> list[Fault]:
    pairs = [(a, b) for i, a in enumerate(shop.services) for b in shop.services[i + 1:]
             if not shop.connected(a, b)]
    updates = {"errors": ERRORS, "latency": LATENCY}
    return [Fault("two-at-once", (Injection(a, updates[ka], ka), Injection(b, updates[kb], kb)))
            for (a, b), (ka, kb) in zip(rng.sample(pairs, len(PAIRS)), PAIRS, strict=True)]


def order_plan(faults: list[Fault], rng: random.Random, spacing: int = 3) -> list[Fault]:
    """Shuffled, then greedily reordered so a target comes back as late as possible: never in
    two consecutive faults (unless nothing else is left), at best ``spacing`` faults apart."""
    pool = list(faults)
    rng.shuffle(pool)
    out: list[Fault] = []
    while pool:
        left = Counter(t for f in pool for t in f.targets)
        eligible = pool
        for back in range(spacing, 0, -1):
            recent = {t for f in out[-back:] for t in f.targets}
            eligible = [f for f in pool if not recent & set(f.targets)]
            if eligible:
                break
        pick = max(eligible or pool, key=lambda f: max(left[t] for t in f.targets))
        pool.remove(pick)
        out.append(pick)
    return out


# --- watching the collector ------------------------------------------------------------------

@dataclass(slots=True)
class Seen:
    """One incident as this process saw it in the API."""

    id: str
    service: str
    kind: str
    team: str | None  # page.team when first seen: who got paged
    summary: str
    first_seen: float
    impacted: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    resolved_seen: float | None = None

    def impacted_at(self, t: float) -> frozenset[str]:
        now: frozenset[str] = frozenset()
        for when, names in self.impacted:
            if when > t:
                break
            now = names
        return now

    def complete_at(self, expected: frozenset[str], until: float) -> float | None:
        for when, names in self.impacted:
            if when > until:
                return None
            if expected <= names:
                return when
        return None

    def team_label(self) -> str:
        if self.team:
            return self.team
        return PLATFORM if self.kind == HOST_KIND else NO_OWNER


def summarize(root: dict[str, Any]) -> str:
    evidence = root.get("evidence") or {}
    text = evidence.get("summary") if isinstance(evidence, dict) else None
    if root.get("kind") == HOST_KIND and isinstance(evidence, dict):
        text = f"{text or ''} services slowed: {evidence.get('services')}".strip()
    return str(text if text else json.dumps(evidence)[:160])


class Watcher(threading.Thread):
    """Polls the incidents API every 0.25 s (open ones; every 2 s, all) and remembers each."""

    def __init__(self, collector: str) -> None:
        super().__init__(daemon=True, name="incident-watcher")
        self.url = f"{collector}/api/incidents"
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.first_poll = threading.Event()
        self.failed_polls = 0
        self.polls = 0
        self._seen: dict[str, Seen] = {}

    def run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as client:
            while not self.halt.is_set():
                full = self.polls % FULL_POLL_EVERY == 0
                try:
                    r = client.get(self.url, params=None if full else {"status": "open"})
                    r.raise_for_status()
                    self._take(r.json()["incidents"], time.time(), full)
                except (httpx.HTTPError, ValueError, KeyError):
                    self.failed_polls += 1
                self.polls += 1
                self.first_poll.set()
                self.halt.wait(POLL_S)

    def _take(self, incidents: list[dict[str, Any]], now: float, full: bool) -> None:
        with self.lock:
            listed = set()
            for inc in incidents:
                listed.add(str(inc["id"]))
                self._observe(inc, now)
            if not full:  # an incident leaving the open list has been resolved
                for seen in self._seen.values():
                    if seen.resolved_seen is None and seen.id not in listed:
                        seen.resolved_seen = now

    def _observe(self, inc: dict[str, Any], now: float) -> None:
        iid, root = str(inc["id"]), inc.get("root_cause") or {}
        seen = self._seen.get(iid)
        if seen is None:
            page_team = (inc.get("page") or {}).get("team")
            seen = self._seen[iid] = Seen(iid, str(root.get("service")), str(root.get("kind")),
                                          page_team if isinstance(page_team, str) else None,
                                          summarize(root), now)
        names = frozenset(str(d.get("service")) for d in inc.get("impacted") or [])
        if not seen.impacted or seen.impacted[-1][1] != names:
            seen.impacted.append((now, names))
        if inc.get("status") == "resolved" and seen.resolved_seen is None:
            seen.resolved_seen = now

    def seen(self) -> list[Seen]:
        """A copy of every incident seen, in the order first seen."""
        with self.lock:
            copies = [Seen(s.id, s.service, s.kind, s.team, s.summary, s.first_seen,
                           list(s.impacted), s.resolved_seen) for s in self._seen.values()]
        return sorted(copies, key=lambda s: s.first_seen)

    def opened_between(self, t0: float, t1: float) -> list[Seen]:
        return [s for s in self.seen() if t0 <= s.first_seen < t1]

    def still_open(self) -> list[Seen]:
        return [s for s in self.seen() if s.resolved_seen is None]


# --- what the services measured themselves ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of a service's ``http_server_request_duration_seconds``, summed over its
    routes and status codes: cumulative counts per bucket bound (+Inf last), and how many of
    the requests were answered 5xx."""

    t: float
    buckets: tuple[tuple[float, float], ...]
    errors: float

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0


@dataclass(frozen=True, slots=True)
class Felt:
    """The requests a service served between two scrapes, as its own histogram has them."""

    n: int
    p50_ms: float
    p95_ms: float
    errors: int


def parse_sample(text: str, t: float) -> Sample | None:
    """The request-duration histogram of one ``/metrics`` page (None: the page has none)."""
    per_le: dict[float, float] = {}
    errors = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != FELT_METRIC:
            continue
        for s in fam.samples:
            if s.name == FELT_METRIC + "_bucket":
                le = float(s.labels["le"])
                per_le[le] = per_le.get(le, 0.0) + s.value
            elif s.name == FELT_METRIC + "_count" and s.labels.get("status_code", "")[:1] == "5":
                errors += s.value
    if not per_le:
        return None
    return Sample(t, tuple(sorted(per_le.items())), errors)


def felt_between(first: Sample, last: Sample) -> Felt | None:
    """What was served from ``first`` to ``last``; a process restarted in between (a counter
    went down) gives what ``last`` counted since its start. None: nothing served."""
    reset = last.count < first.count or last.errors < first.errors or any(
        b < a for (_, a), (_, b) in zip(first.buckets, last.buckets, strict=False))
    if reset or [b for b, _ in first.buckets] != [b for b, _ in last.buckets]:
        delta = list(last.buckets)
        errors = last.errors
    else:
        delta = [(b, c - a) for (b, a), (_, c) in zip(first.buckets, last.buckets, strict=True)]
        errors = last.errors - first.errors
    n = int(round(delta[-1][1])) if delta else 0
    if n <= 0:
        return None
    cumulative = dict(delta)
    p50, p95 = (histogram_quantile(q, cumulative) or 0.0 for q in (0.5, 0.95))
    return Felt(n, round(1000 * p50, 1), round(1000 * p95, 1), int(round(errors)))


class FeltWatcher(threading.Thread):
    """Scrapes every demo service's own ``/metrics`` once a second, directly (not through the
    collector, whose analysis the campaign judges), and keeps ``FELT_KEEP_S`` of samples."""

    def __init__(self, urls: dict[str, str]) -> None:
        super().__init__(daemon=True, name="felt-watcher")
        self.urls = urls
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.failed = 0
        self._samples: dict[str, list[Sample]] = {s: [] for s in urls}

    def run(self) -> None:
        with httpx.Client(timeout=2, trust_env=False) as client:
            while not self.halt.is_set():
                for service, url in self.urls.items():
                    try:
                        r = client.get(url.rstrip("/") + "/metrics")
                        r.raise_for_status()
                        sample = parse_sample(r.text, time.time())
                    except (httpx.HTTPError, ValueError):
                        sample = None  # down (a fault) or busy: a gap, not an error
                        self.failed += 1
                    if sample is not None:
                        self._add(service, sample)
                self.halt.wait(FELT_EVERY_S)

    def _add(self, service: str, sample: Sample) -> None:
        with self.lock:
            kept = self._samples[service]
            kept.append(sample)
            while kept and kept[0].t < sample.t - FELT_KEEP_S:
                kept.pop(0)

    def felt(self, service: str, start: float, end: float) -> Felt | None:
        """What ``service`` served between the last scrape at or before ``start`` (else the
        first after it) and the last one at or before ``end``."""
        with self.lock:
            kept = list(self._samples.get(service, ()))
        before = [s for s in kept if s.t <= start] or [s for s in kept if s.t > start][:1]
        upto = [s for s in kept if s.t <= end]
        if not before or not upto or upto[-1].t <= before[-1].t:
            return None
        return felt_between(before[-1], upto[-1])

    def compare(self, t0: float, until: float) -> dict[str, dict[str, Any]]:
        """Per service: its p50 and p95 over the ``FELT_BEFORE_S`` before ``t0`` and from
        ``t0 + FELT_SKIP_S`` to ``until``, and their ratios when both periods served
        ``FELT_MIN_REQUESTS``."""
        out: dict[str, dict[str, Any]] = {}
        for service in self.urls:
            before = self.felt(service, t0 - FELT_BEFORE_S, t0)
            during = self.felt(service, t0 + FELT_SKIP_S, until)
            row: dict[str, Any] = {"before": asdict(before) if before else None,
                                   "during": asdict(during) if during else None}
            if before and during and min(before.n, during.n) >= FELT_MIN_REQUESTS:
                row["p50_x"] = round(during.p50_ms / before.p50_ms, 2) if before.p50_ms else None
                row["p95_x"] = round(during.p95_ms / before.p95_ms, 2) if before.p95_ms else None
            out[service] = row
        return out


def slowed_by_felt(felt: dict[str, dict[str, Any]]) -> list[str]:
    """The services whose own median rose ``FELT_P50_X`` times or p95 ``FELT_P95_X`` times."""
    return sorted(s for s, row in felt.items()
                  if (row.get("p50_x") or 0) >= FELT_P50_X or (row.get("p95_x") or 0) >= FELT_P95_X)


# --- one fault -------------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    index: int
    kind: str
    targets: list[str]
    label: str
    skipped: str | None = None
    waited_s: float = 0.0  # before injecting: a target's earlier incident was still open
    injected_at: float | None = None
    held_until: float | None = None
    cleared_at: float | None = None
    right_rc: bool = False
    right_team: bool = False
    expected_teams: dict[str, str | None] = field(default_factory=dict)
    named_kinds: list[str] = field(default_factory=list)
    ttrc_s: float | None = None
    # injection -> the EVIDENCE_EVENTS-th faulted request as the demo recorded it; TTRC - that
    evidence_s: float | None = None
    after_evidence_s: float | None = None
    # target -> seconds after injection of its first faulted requests (all processes merged)
    evidence: dict[str, list[float]] = field(default_factory=dict)
    blast_s: float | None = None
    resolve_s: float | None = None
    rc_ids: list[str] = field(default_factory=list)
    expected_blast: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    paged: list[str] = field(default_factory=list)
    false_pages: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    # service -> its own histogram's p50/p95 before and during the fault (FeltWatcher)
    felt: dict[str, dict[str, Any]] = field(default_factory=dict)
    felt_slowed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Campaign:
    shop: Shop
    control: ControlClient
    watcher: Watcher
    hold_s: float
    gap_s: float
    felt: FeltWatcher | None = None
    urls: dict[str, str] = field(default_factory=dict)  # service -> its own base URL


def fault_evidence(urls: dict[str, str], since: float) -> dict[str, list[float]]:
    """Per target, the wall-clock times of its first faulted requests at or after ``since``,
    merged over every service process that recorded some (``GET /admin/faults``: a service's
    own fault, its callers' refused calls when it is down, a database's callers). A process
    that does not answer (the target, when down) adds nothing."""
    times: dict[str, list[float]] = {}
    with httpx.Client(timeout=2, trust_env=False) as client:
        for url in urls.values():
            try:
                r = client.get(url.rstrip("/") + "/admin/faults")
                r.raise_for_status()
                evidence = r.json().get("evidence") or {}
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            for target, rec in evidence.items():
                times.setdefault(target, []).extend(
                    float(t) for t in rec.get("first", []) if float(t) >= since)
    return {t: sorted(v) for t, v in times.items()}


def evidence_line(out: Outcome) -> str | None:
    """When the demo had served the fault's EVIDENCE_EVENTS-th faulted request, and the
    collector's own time after it (None for a hog, which fails nothing by itself)."""
    if out.kind == "cpu-hog":
        return None
    if out.evidence_s is None:
        # Too few in the hold, or recorded outside the demo (the load generator calling a
        # down frontend records nothing).
        counts = ", ".join(f"{t} {len(out.evidence.get(t, []))}" for t in out.targets)
        return f"the demo recorded fewer than {EVIDENCE_EVENTS} faulted requests ({counts})"
    return (f"faulted request #{EVIDENCE_EVENTS} at {out.evidence_s:.2f} s, named "
            f"{fmt(out.after_evidence_s)} after it")


def expected_blast(shop: Shop, inj: Injection) -> frozenset[str]:
    if inj.effect == "hog":
        return frozenset()
    impacted = shop.callers(inj.target, required_only=inj.effect != "latency")
    return frozenset(impacted & shop.reached(ENTRY))


def is_right(fault: Fault, inc: Seen, target: str) -> bool:
    return inc.kind == HOST_KIND if fault.kind == "cpu-hog" else inc.service == target


def right_incident(fault: Fault, opened: list[Seen], target: str) -> Seen | None:
    return next((s for s in opened if is_right(fault, s, target)), None)


def is_false_page(fault: Fault, inc: Seen) -> bool:
    if fault.kind == "cpu-hog":
        return inc.kind != HOST_KIND
    return inc.kind == HOST_KIND or inc.service not in fault.targets


def complete(camp: Campaign, fault: Fault, t0: float) -> bool:
    opened = camp.watcher.opened_between(t0, float("inf"))
    for inj in fault.injections:
        inc = right_incident(fault, opened, inj.target)
        if inc is None or inc.complete_at(expected_blast(camp.shop, inj), time.time()) is None:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Quiet:
    waited_s: float
    blockers: list[Seen]  # incidents naming a target still open after QUIET_MAX_S


def wait_quiet(camp: Campaign, fault: Fault) -> Quiet:
    """Until no open incident names one of the fault's targets: the collector keeps one
    incident per root cause, so the fault could not open a new one."""
    t0 = time.time()
    while True:
        blockers = [s for s in camp.watcher.still_open()
                    if any(is_right(fault, s, t) for t in fault.targets)]
        if not blockers or time.time() - t0 >= QUIET_MAX_S:
            return Quiet(time.time() - t0, blockers)
        time.sleep(1.0)


def blocked(quiet: Quiet) -> str:
    still = ", ".join(f"{s.service}[{s.kind}] first seen {time.time() - s.first_seen:.0f} s ago"
                      for s in quiet.blockers)
    return f"skipped: an incident naming a target stayed open {quiet.waited_s:.0f} s: {still}"


def inject(camp: Campaign, fault: Fault) -> str | None:
    """Apply every injection; None when done, else why the fault is skipped."""
    for inj in fault.injections:
        try:
            camp.control.fault(inj.target, inj.update)
        except ControlError as exc:
            clear(camp)
            if "cpu_hog" in inj.update and "(HTTP 400)" in str(exc):
                return "skipped: control API has no cpu_hog"
            return f"skipped: {exc}"
    return None


def clear(camp: Campaign) -> None:
    try:
        camp.control.clear()
    except ControlError as exc:
        print(f"  clearing faults failed: {exc}", flush=True)


def run_fault(camp: Campaign, index: int, fault: Fault, quiet: Quiet) -> Outcome:
    out = Outcome(index, fault.kind, list(fault.targets), fault.label(), waited_s=quiet.waited_s)
    # From the request: stopping a process for `down` takes the control API a few seconds.
    t0 = time.time()
    out.skipped = blocked(quiet) if quiet.blockers else inject(camp, fault)
    if out.skipped:
        return out
    out.injected_at = t0
    while time.time() - t0 < camp.hold_s and not complete(camp, fault, t0):
        time.sleep(POLL_S)
    out.held_until = time.time()
    if camp.urls:
        out.evidence = {t: [round(x - t0, 3) for x in ts]
                        for t, ts in fault_evidence(camp.urls, t0).items() if t in fault.targets}
    time.sleep(LATE_S)
    clear(camp)
    out.cleared_at = time.time()
    if camp.felt is not None:
        out.felt = camp.felt.compare(t0, out.cleared_at)
        out.felt_slowed = slowed_by_felt(out.felt)
    time.sleep(camp.gap_s)
    return out


def score(camp: Campaign, fault: Fault, out: Outcome, window_end: float) -> None:
    """Fill ``out`` from the incidents first seen from injection to ``window_end``."""
    assert out.injected_at is not None and out.held_until is not None
    opened = camp.watcher.opened_between(out.injected_at, window_end)
    out.incidents = [{"id": s.id, "service": s.service, "kind": s.kind, "team": s.team,
                      "seen_after_s": round(s.first_seen - out.injected_at, 3),
                      "summary": s.summary} for s in opened]
    out.paged = [s.team_label() for s in opened]
    out.false_pages = [{"id": s.id, "service": s.service, "kind": s.kind,
                        "team": s.team_label()} for s in opened if is_false_page(fault, s)]
    n = len(fault.injections)
    out.right_rc = len(opened) >= n and all(
        any(is_right(fault, s, t) for s in opened[:n]) for t in fault.targets)
    score_targets(camp, fault, out, opened)


def score_targets(camp: Campaign, fault: Fault, out: Outcome, opened: list[Seen]) -> None:
    assert out.injected_at is not None and out.held_until is not None
    ttrc: list[float | None] = []
    shown: list[float | None] = []
    after: list[float | None] = []
    blast: list[float | None] = []
    teams_ok = []
    for inj in fault.injections:
        expected = expected_blast(camp.shop, inj)
        out.expected_blast[inj.target] = sorted(expected)
        inc = right_incident(fault, opened, inj.target)
        # A shared-host incident names a host: its team is the host's owner in the catalog.
        want = camp.shop.team(inc.service if inc and inj.effect == "hog" else inj.target)
        out.expected_teams[inj.target] = want
        seen = out.evidence.get(inj.target, [])
        third = seen[EVIDENCE_EVENTS - 1] if len(seen) >= EVIDENCE_EVENTS else None
        shown.append(third)
        if inc is None:
            after.append(None)
            ttrc.append(None)
            blast.append(None)
            teams_ok.append(False)
            out.missing += sorted(expected)
            continue
        out.rc_ids.append(inc.id)
        out.named_kinds.append(inc.kind)
        teams_ok.append(inc.team == want)
        in_time = inc.first_seen <= out.held_until
        ttrc.append(inc.first_seen - out.injected_at if in_time else None)
        after.append(None if ttrc[-1] is None or third is None else ttrc[-1] - third)
        done = inc.complete_at(expected, out.held_until)
        blast.append(done - inc.first_seen if in_time and done is not None else None)
        out.missing += sorted(expected - inc.impacted_at(out.held_until))
        last = inc.impacted[-1][1] if inc.impacted else frozenset()
        out.unexpected += sorted(last - expected - set(fault.targets))
    out.right_team = out.right_rc and all(teams_ok)
    out.ttrc_s = worst(ttrc)
    out.evidence_s = worst(shown)
    out.after_evidence_s = worst(after)
    out.blast_s = None if fault.kind == "cpu-hog" else worst(blast)


def worst(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else max(
        v for v in values if v is not None)


def fmt(value: float | None, unit: str = " s") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def fault_line(out: Outcome, total: int) -> str:
    head = f"[{out.index:>2}/{total}] {out.kind:<11} {out.label:<44}"
    if out.skipped:
        return f"{head} {out.skipped}"
    false_teams = Counter(str(f["team"]) for f in out.false_pages)
    line = (f"{head} RC {'y' if out.right_rc else 'n'} team {'y' if out.right_team else 'n'}"
            f"  TTRC {fmt(out.ttrc_s):>7}  blast "
            f"{'n/a' if out.kind == 'cpu-hog' else fmt(out.blast_s):>7}"
            f"  false {len(out.false_pages)}"
            + (f" ({', '.join(f'{t} x{n}' for t, n in false_teams.items())})"
               if false_teams else ""))
    extra = []
    if out.named_kinds:
        extra.append("named " + "/".join(out.named_kinds))
    if not out.right_rc and out.incidents:
        extra.append("first: " + ", ".join(f"{i['service']}[{i['kind']}]"
                                            for i in out.incidents[:2]))
    if not out.incidents:
        extra.append("no incident")
    if out.blast_s is None and out.kind != "cpu-hog" and out.missing:
        extra.append(f"missing {sorted(set(out.missing))}")
    if out.unexpected:
        extra.append(f"unexpected {sorted(set(out.unexpected))}")
    shown = evidence_line(out)
    if shown:
        extra.append(shown)
    if out.waited_s >= 1:
        extra.append(f"waited {out.waited_s:.0f} s for an old incident")
    if out.felt:
        extra.append(felt_line(out.felt, out.felt_slowed))
    return line + ("  | " + "; ".join(extra) if extra else "")


def felt_line(felt: dict[str, dict[str, Any]], slowed: list[str]) -> str:
    """The users' p95 (the entry's own histogram) and the services slowed, as they measured."""
    entry = felt.get(ENTRY, {})
    users = (f"x{entry['p95_x']:.2f}" if entry.get("p95_x") is not None else "n/a")
    rises = ", ".join(f"{s} p50 x{felt[s].get('p50_x') or 0:.1f} "
                      f"p95 x{felt[s].get('p95_x') or 0:.1f}" for s in slowed)
    return f"felt: users' p95 {users}, slowed {rises or 'none'}"


def run_plan(camp: Campaign, plan: list[Fault]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    quiet = wait_quiet(camp, plan[0]) if plan else Quiet(0.0, [])
    try:
        for i, fault in enumerate(plan):
            out = run_fault(camp, i + 1, fault, quiet)
            # The next fault's wait belongs to this one's window: anything seen opening
            # before the next injection follows from this fault.
            quiet = wait_quiet(camp, plan[i + 1]) if i + 1 < len(plan) else Quiet(0.0, [])
            if out.injected_at is not None:
                score(camp, fault, out, time.time())
            outcomes.append(out)
            print(fault_line(out, len(plan)), flush=True)
    except KeyboardInterrupt:
        print("interrupted: scoring the faults that finished", flush=True)
        clear(camp)
    return outcomes


def wait_resolved(camp: Campaign, outcomes: list[Outcome]) -> None:
    ids = {i for o in outcomes for i in o.rc_ids}
    deadline = time.time() + RESOLVE_WAIT_S
    print(f"waiting up to {RESOLVE_WAIT_S:.0f} s for the last incidents to resolve", flush=True)
    while time.time() < deadline and any(s.id in ids for s in camp.watcher.still_open()):
        time.sleep(POLL_S)
    seen = {s.id: s for s in camp.watcher.seen()}
    for out in outcomes:
        if out.cleared_at is None or not out.rc_ids:
            continue
        times = [seen[i].resolved_seen for i in out.rc_ids]
        cleared = out.cleared_at
        out.resolve_s = worst([None if t is None else max(0.0, t - cleared) for t in times])


# --- the summary -----------------------------------------------------------------------------

def stats(values: Iterable[float | None]) -> tuple[list[float], int]:
    vals = list(values)
    got = [v for v in vals if v is not None]
    return got, len(vals) - len(got)


def pct(values: list[float], q: float) -> str:
    return f"{quantile(values, q):.2f}" if values else "-"


def kind_row(kind: str, rows: list[Outcome]) -> str:
    n = len(rows)
    rc = sum(o.right_rc for o in rows)
    team = sum(o.right_team for o in rows)
    false = sum(len(o.false_pages) for o in rows)
    ttrc, _ = stats(o.ttrc_s for o in rows)
    after, _ = stats(o.after_evidence_s for o in rows)
    blast, _ = stats(o.blast_s for o in rows)
    res, _ = stats(o.resolve_s for o in rows)
    blast_s = "n/a" if kind == "cpu-hog" else f"{pct(blast, .5)}/{pct(blast, .95)}"
    after_s = "n/a" if kind == "cpu-hog" else f"{pct(after, .5)}/{pct(after, .95)}"
    return (f"{kind:<12} {n:>3} {rc:>4}/{n:<3} {team:>4}/{rc:<3} {false:>5}"
            f"  {pct(ttrc, .5):>6}/{pct(ttrc, .95):<6} {after_s:>13} {blast_s:>13}"
            f"  {pct(res, .5):>7}")


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    ran = [o for o in outcomes if not o.skipped]
    # Grouped by reason, without the details after its second colon.
    skipped = Counter(":".join(o.skipped.split(":")[:2]) for o in outcomes if o.skipped)
    n = len(ran)
    rc = sum(o.right_rc for o in ran)
    false = [f for o in ran for f in o.false_pages]
    ttrc, ttrc_none = stats(o.ttrc_s for o in ran)
    shown, shown_none = stats(o.evidence_s for o in ran if o.kind != "cpu-hog")
    after, after_none = stats(o.after_evidence_s for o in ran if o.kind != "cpu-hog")
    blast, blast_none = stats(o.blast_s for o in ran if o.kind != "cpu-hog")
    res, res_none = stats(o.resolve_s for o in ran if o.rc_ids)
    hogs = [o for o in ran if o.kind == "cpu-hog" and o.felt]
    # A hog that slowed no service (as they measured themselves) and opened nothing: no page
    # was due by what the services served, so this reading counts it right.
    quiet_hogs = sum(1 for o in hogs if not o.felt_slowed and not o.incidents)
    return {
        "faults_run": n, "skipped": dict(skipped), "right_rc": rc,
        "right_rc_pct": 100.0 * rc / n if n else None,
        "right_team": sum(o.right_team for o in ran),
        "false_pages": len(false),
        "false_pages_per_20": 20.0 * len(false) / n if n else None,
        "false_pages_by_team": dict(Counter(str(f["team"]) for f in false)),
        "ttrc": describe(ttrc, ttrc_none), "evidence": describe(shown, shown_none),
        "after_evidence": describe(after, after_none), "blast": describe(blast, blast_none),
        "resolve": describe(res, res_none),
        "hogs_felt": [{"label": o.label, "users_p95_x": o.felt.get(ENTRY, {}).get("p95_x"),
                       "slowed": o.felt_slowed, "named": o.right_rc,
                       "opened": len(o.incidents)} for o in hogs],
        "right_rc_quiet_hogs_right": rc + quiet_hogs,
    }


def describe(values: list[float], missing: int) -> dict[str, Any]:
    if not values:
        return {"n": 0, "missing": missing}
    return {"n": len(values), "missing": missing, "p50": quantile(values, .5),
            "p95": quantile(values, .95), "max": max(values)}


def dist(d: dict[str, Any], what: str) -> str:
    if not d["n"]:
        return f"- (none; {d['missing']} {what})"
    return (f"p50 {d['p50']:.2f} s  p95 {d['p95']:.2f} s  max {d['max']:.2f} s"
            f"  ({d['missing']} {what})")


def print_summary(outcomes: list[Outcome], s: dict[str, Any]) -> None:
    n = s["faults_run"]
    print(f"\nfaults run {n}, skipped {sum(s['skipped'].values())}"
          + "".join(f"\n  {k}: {v}" for k, v in s["skipped"].items()))
    if not n:
        return
    print(f"right root cause ranked first  {s['right_rc']}/{n} ({s['right_rc_pct']:.0f} %)"
          f"   target {TARGETS['right RC']}")
    if s["hogs_felt"]:
        print("cpu-hog faults as the services' own histograms measured them (not the collector):")
        for h in s["hogs_felt"]:
            users = "n/a" if h["users_p95_x"] is None else f"x{h['users_p95_x']:.2f}"
            verdict = ("named" if h["named"] else "opened nothing" if not h["opened"]
                       else "not named first")
            print(f"  {h['label']:<16} users' p95 {users:<6} slowed "
                  f"{', '.join(h['slowed']) or 'none':<30} {verdict}")
        alt = s["right_rc_quiet_hogs_right"]
        print(f"  right root cause, counting a hog that slowed no service and opened nothing as "
              f"right: {alt}/{n} ({100.0 * alt / n:.0f} %)")
    print(f"right team (of those)          {s['right_team']}/{s['right_rc']}")
    by_team = ", ".join(f"{t} {c}" for t, c in sorted(s["false_pages_by_team"].items()))
    print(f"false pages                    {s['false_pages']} ({s['false_pages_per_20']:.1f} per "
          f"20 faults)   target {TARGETS['false pages']}" + (f"\n  by team: {by_team}"
                                                            if by_team else ""))
    print(f"time to root cause             {dist(s['ttrc'], 'never')}"
          f"   target p95 {TARGETS['TTRC p95']}")
    print(f"  the demo's faulted request #{EVIDENCE_EVENTS}  "
          f"{dist(s['evidence'], 'unknown')}   (its own record; not for cpu-hog)")
    print(f"  named after that request     {dist(s['after_evidence'], 'unknown')}"
          "   (the collector's part of TTRC)")
    print(f"blast radius complete after RC {dist(s['blast'], 'incomplete')}"
          f"   target p95 {TARGETS['blast p95']}")
    print(f"time to resolve after clear    {dist(s['resolve'], 'unresolved')}")
    print(f"\n{'kind':<12} {'n':>3} {'right RC':>8} {'team':>8} {'false':>5}"
          f"  {'TTRC p50/p95':>13} {f'after #{EVIDENCE_EVENTS}':>13} {'blast p50/p95':>13}"
          f"  {'res p50':>7}")
    ran = [o for o in outcomes if not o.skipped]
    for kind in KINDS:
        rows = [o for o in ran if o.kind == kind]
        if rows:
            print(kind_row(kind, rows))


# --- processes: the demo, the burner, browsers -----------------------------------------------

def port_of(url: str) -> str:
    return str(urlsplit(url).port or 80)


def start_demo(args: argparse.Namespace, workdir: Path) -> subprocess.Popen[bytes]:
    log_path = workdir / "demo.log"
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"),
           "--collector-port", port_of(args.collector), "--admin-port", port_of(args.admin),
           "--dashboard-port", port_of(args.dashboard), "--data-dir", str(workdir / "data"),
           *(["--base-port", str(args.base_port)] if args.base_port else [])]
    print(f"no demo answers at {args.collector}: starting one (log and data in {workdir})",
          flush=True)
    env = {**os.environ, "CONWAY_ADMIN_TOKEN": args.token}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for url in (f"{args.collector}/healthz", f"{args.admin}/healthz", f"{args.dashboard}/"):
        wait_http(url, proc, timeout_s=90, log=log_path)
    return proc


def open_browsers(n: int, dashboard: str) -> list[Any]:
    """``n`` headless Chromiums, each with the overview, /teams and a service page open."""
    if n <= 0:
        return []
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("selenium is missing (pip install 'dash[testing]'): running without browsers")
        return []
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        print(f"{CHROMIUM} or {CHROMEDRIVER} is missing: running without browsers")
        return []
    drivers: list[Any] = []
    for _ in range(n):
        options: Any = Options()  # selenium 4.2 leaves add_argument untyped
        options.binary_location = CHROMIUM
        for arg in CHROME_ARGS:
            options.add_argument(arg)
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except WebDriverException as exc:
            print(f"chromium did not start ({exc.msg}): {len(drivers)} browser(s)")
            break
        drivers.append(driver)
        for j, path in enumerate(DASHBOARD_PAGES):
            if j:
                driver.switch_to.new_window("window")
            driver.get(dashboard + path)
    return drivers


def quit_browsers(drivers: list[Any]) -> None:
    for driver in drivers:
        try:
            driver.quit()
        except Exception as exc:  # a browser that died already is fine
            print(f"browser quit: {exc}")


def list_incidents(title: str, incidents: list[Seen], t0: float | None = None) -> None:
    print(f"{title}: {len(incidents)}", flush=True)
    for s in incidents:
        when = f"+{s.first_seen - t0:6.1f} s  " if t0 is not None else ""
        print(f"  {when}{s.kind:<11} {s.service:<16} {s.team_label():<12} {s.summary}")


def fault_free(watcher: Watcher, seconds: float, browsers: int, dashboard: str) -> None:
    drivers = open_browsers(browsers, dashboard)
    try:
        print(f"fault-free: {len(drivers)} browser(s) x {len(DASHBOARD_PAGES)} pages "
              f"{list(DASHBOARD_PAGES)} polling, {seconds:.0f} s, no faults", flush=True)
        t0 = time.time()
        time.sleep(seconds)
        opened = watcher.opened_between(t0, time.time())
    finally:
        quit_browsers(drivers)
    list_incidents("incidents opened with no fault", opened, t0)
    teams = Counter(s.team_label() for s in opened)
    print(f"{len(opened)} in {seconds:.0f} s ({3600 * len(opened) / seconds:.1f} per hour)"
          + (f"; by team: {dict(teams)}" if teams else ""))


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collector", default="http://127.0.0.1:4318")
    p.add_argument("--admin", default="http://127.0.0.1:8100")
    p.add_argument("--dashboard", default="http://127.0.0.1:8050")
    p.add_argument("--token", default=admin_token(),
                   help="control API token (default: $CONWAY_ADMIN_TOKEN or make demo's)")
    p.add_argument("--base-port", type=int, default=None,
                   help="first service port of a demo this bench starts")
    p.add_argument("--warmup", type=float, default=45.0,
                   help="seconds of normal traffic before the first fault, for a started demo")
    p.add_argument("--burner", action="store_true", help="burn one core beside the demo")
    p.add_argument("--faults", type=int, default=None, help="run only the first N of the plan")
    p.add_argument("--only", type=kinds_arg, default=None, help="KIND[,KIND] of " + ",".join(KINDS))
    p.add_argument("--hold", type=float, default=20.0)
    p.add_argument("--gap", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write per-fault results here")
    p.add_argument("--fault-free", type=float, default=None, metavar="S",
                   help="no faults: watch S seconds for incidents (with --browsers N)")
    p.add_argument("--browsers", type=int, default=0)
    return p.parse_args(argv)


def kinds_arg(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {bad}; valid: {', '.join(KINDS)}")
    return kinds


def make_plan(shop: Shop, args: argparse.Namespace) -> list[Fault]:
    rng = random.Random(args.seed)
    plan = [f for f in build_plan(shop, rng) if args.only is None or f.kind in args.only]
    return order_plan(plan, rng)[: args.faults]


def campaign(args: argparse.Namespace, shop: Shop, watcher: Watcher) -> int:
    control = ControlClient(args.admin, args.token)
    try:
        control.services()
        control.clear()
    except ControlError as exc:
        print(f"campaign: {exc}", file=sys.stderr)
        return 1
    plan = make_plan(shop, args)
    print(f"plan: {len(plan)} faults (hold <= {args.hold:g} s, gap {args.gap:g} s, "
          f"seed {args.seed})", flush=True)
    urls = {str(d["name"]): str(d["url"]) for d in control.services().get("services", [])
            if d.get("url")}
    felt = FeltWatcher(urls)
    felt.start()
    print(f"reading the services' own histograms for {FELT_BEFORE_S:g} s before the first fault",
          flush=True)
    time.sleep(FELT_BEFORE_S + FELT_EVERY_S)
    camp = Campaign(shop, control, watcher, args.hold, args.gap, felt, urls)
    list_incidents("open before the first fault", watcher.still_open())
    try:
        outcomes = run_plan(camp, plan)
    finally:
        clear(camp)
        felt.halt.set()
        felt.join()
    print(f"the services' own /metrics: {felt.failed} scrapes failed (a service down, or busy "
          f"past 2 s: a gap in its felt figures)", flush=True)
    wait_resolved(camp, outcomes)
    list_incidents("still open at the end", watcher.still_open())
    s = summary(outcomes)
    print_summary(outcomes, s)
    if args.json:
        args.json.write_text(json.dumps({"summary": s, "faults": [asdict(o) for o in outcomes]},
                                        indent=1, default=sorted), encoding="utf-8")
        print(f"per-fault results in {args.json}")
    return 0


def measure(args: argparse.Namespace) -> int:
    watcher = Watcher(args.collector)
    watcher.start()
    try:
        watcher.first_poll.wait(10)
        if args.warmup_needed:
            print(f"warm-up {args.warmup:.0f} s", flush=True)
            time.sleep(args.warmup)
        load_line("start")
        if args.fault_free is not None:
            fault_free(watcher, args.fault_free, args.browsers, args.dashboard)
            status = 0
        else:
            status = campaign(args, load_shop(), watcher)
    finally:
        watcher.halt.set()
        watcher.join()
    print(f"incident polls: {watcher.polls}, failed {watcher.failed_polls}")
    load_line("end")
    return status


def load_line(when: str) -> None:
    one_m, five_m, fifteen_m = os.getloadavg()
    print(f"load average at {when}: {one_m:.2f} {five_m:.2f} {fifteen_m:.2f} "
          f"({os.cpu_count()} cores)", flush=True)


def with_processes(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """Run ``run`` with a demo (started if none answers) and the burner, then stop them."""
    procs: list[subprocess.Popen[bytes]] = []
    workdir: Path | None = None
    try:
        args.warmup_needed = False
        if not answers(args.collector):
            workdir = Path(tempfile.mkdtemp(prefix="conway-campaign-"))
            args.token = secrets.token_urlsafe(18)
            procs.append(start_demo(args, workdir))
            args.warmup_needed = True
        if args.burner:
            procs.append(subprocess.Popen([sys.executable, "-c", "while 1: pass"]))
        print(f"CPU burner: {f'running (pid {procs[-1].pid})' if args.burner else 'off'}",
              flush=True)
        return run(args)
    finally:
        for proc in reversed(procs):
            stop(proc, timeout_s=60)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    # Stopped with SIGTERM (kill, a CI timeout): still stop the demo and burner it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return with_processes(parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
