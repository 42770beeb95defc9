"""Paging: Conway's verdicts sent where on-call work starts, never blocking anything else.

Each open incident (as the last evaluation tick left it, ``Diagnosis.latest``) becomes alerts:

- one ``ConwayRootCause`` alert for its root cause, labels ``alertname``, ``service`` (the
  host, for a ``shared-host`` incident) and ``root_cause`` (the same), ``team`` (absent when
  nobody owns it), ``severity="page"``; annotations ``incident`` (its id), ``kind``,
  ``summary``, ``description`` (the evidence), ``runbook_url``, ``dashboard_url``, ``on_call``,
  ``channel`` where known;
- one ``ConwayImpacted`` alert per impacted service, ``severity="info"``, labelled with the
  impacted service's ``team`` and the ``root_cause`` and ``root_cause_team``, so a route can
  tell that team without waking it (``deploy/alertmanager.yml`` sends ``info`` to chat and
  inhibits it for a team that is paged for the same root cause).

The incident id and the kind are annotations, not labels: past one collector each replica
(fed its share of the traces) opens its own incident, with its own id, for the same root cause,
and may judge its kind a moment apart; with the same labels their alerts are one alert in
Alertmanager, hence one page. So too an incident whose kind escalates (latency, then errors,
then down): the same alert, its annotations updated, not a second page.

``Pager.tick`` (after each evaluation tick, and every ``interval_s``, from the pager's own
task) compares them with what it sent:
new or changed alerts, and firing ones last sent ``RESEND_S`` ago, go to every sink; an alert
no longer wanted (its incident resolved, or the verdict moved to another service, see
``incidents``) is sent once more as resolved. Sinks:

- ``AlertmanagerSink`` (``--alertmanager URL``, repeatable for an HA pair: each gets every
  alert, as Prometheus sends them): Alertmanager API v2, ``POST /api/v2/alerts``. Firing alerts
  carry ``endsAt`` = now + ``ENDS_AFTER_RESENDS`` x ``RESEND_S``, so Alertmanager resolves them by
  itself if Conway stops (as Prometheus does); resolved ones their resolution time. Alerts are
  state, so the queue keeps the newest state of each alert and one POST carries them all.
- ``WebhookSink`` (``--page-webhook URL``): the same events as JSON, one per POST, in order,
  PagerDuty Events v2 shaped (``event_action`` trigger / resolve, a ``dedup_key`` stable per
  incident and alert, ``payload.severity`` critical / info), sent when an alert is new, changes,
  or resolves.

Never blocks, never loses silently: sinks are sent to from the pager's task with a
``SEND_TIMEOUT_S`` timeout, never from ingest or a read. A sink that fails (refused, a timeout,
a non-2xx answer) keeps what it holds and is retried with backoff (1 s, doubling to
``BACKOFF_MAX_S``). Each queue holds at most ``MAX_QUEUE`` alerts or events; past it the oldest
is dropped and counted. ``/metrics``: ``conway_paging_sent_total``,
``conway_paging_send_failures_total``, ``conway_paging_dropped_total``,
``conway_paging_queued`` (per ``sink``), ``conway_paging_firing_alerts``; ``/healthz`` shows each
sink's last error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

ROOT_ALERT, IMPACT_ALERT = "ConwayRootCause", "ConwayImpacted"
RESEND_S = 30.0  # firing alerts are re-sent this often (Prometheus' default is 1 min)
ENDS_AFTER_RESENDS = 4  # a firing alert's endsAt: this many resends ahead
MAX_QUEUE = 1_000  # alerts (Alertmanager) or events (webhook) a sink holds while it fails
BACKOFF_MAX_S = 60.0
SEND_TIMEOUT_S = 5.0
POLL_S = 0.1  # how often the pager looks for a new evaluation
FINAL_FLUSH_S = 2.0  # at shutdown, the time given to deliver what is still queued
MAX_DESCRIPTION_CHARS = 4_000
MAX_IMPACTED_ALERTS = 50  # per incident: the rest are counted in the root cause's annotation

IncidentSource = Callable[[], Sequence[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as Conway wants it now. ``key`` identifies it across ticks (its labels)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    generator_url: str

    @property
    def key(self) -> str:
        return json.dumps(sorted(self.labels.items()))

    @property
    def headline(self) -> str:
        """What a person would call a change: the summary (owner, impacted services), not
        the counts in the description, which move every tick."""
        return self.annotations.get("summary", "")

    @property
    def page(self) -> bool:
        return self.labels.get("severity") == "page"

    def to_alertmanager(self, ends_at: float) -> dict[str, Any]:
        return {"labels": dict(self.labels), "annotations": dict(self.annotations),
                "startsAt": _rfc3339(self.starts_at), "endsAt": _rfc3339(ends_at),
                "generatorURL": self.generator_url}

    def to_event(self, action: str, at: float) -> dict[str, Any]:
        """A PagerDuty Events v2 shaped event (``routing_key`` left to the receiver)."""
        labels = self.labels
        dedup = hashlib.sha256(self.key.encode()).hexdigest()[:32]
        return {"event_action": action, "dedup_key": f"conway-{dedup}",
                "payload": {"summary": self.annotations.get("summary", labels["alertname"])[:1024],
                            "source": labels.get("service", ""),
                            "severity": "critical" if self.page else "info",
                            "timestamp": _rfc3339(at), "component": labels.get("service", ""),
                            "group": labels.get("team", ""),
                            "class": self.annotations.get("kind", ""),
                            "custom_details": {"labels": dict(labels),
                                               "annotations": dict(self.annotations)}},
                "links": [{"href": self.generator_url, "text": "Conway"}]
                if self.generator_url else []}


def alerts_for(incident: Mapping[str, Any], dashboard_url: str | None = None) -> list[Alert]:
    """The alerts one open incident (``/api/incidents`` JSON) stands for."""
    rc = incident["root_cause"]
    page = incident.get("page") or {}
    service, kind, inc_id = str(rc["service"]), str(rc["kind"]), str(incident["id"])
    team = page.get("team") or rc.get("team")
    started = float(incident.get("started_at") or time.time())
    link = (f"{dashboard_url.rstrip('/')}/services/{quote(service, safe='')}"
            if dashboard_url else "")
    impacted = [d for d in incident.get("impacted") or () if isinstance(d, Mapping)]
    names = [str(d.get("service")) for d in impacted]
    evidence = rc.get("evidence") or {}
    owner = str(team) if team else str(page.get("fallback") or "no owner")
    summary = f"{service} {kind}: page {owner}"
    if names:
        summary += f"; impacted {', '.join(names[:5])}" + (
            f" and {len(names) - 5} more" if len(names) > 5 else "")
    description = str(evidence.get("summary", ""))
    if evidence.get("trace_ids"):
        description += f"\nexample traces: {', '.join(map(str, evidence['trace_ids'][:5]))}"
    for d in impacted[:10]:
        description += f"\n{d.get('summary', '')}"
    labels = _clean({"alertname": ROOT_ALERT, "service": service, "root_cause": service,
                     "team": team, "severity": "page"})
    annotations = _clean({"incident": inc_id, "kind": kind, "summary": summary,
                          "description": description[:MAX_DESCRIPTION_CHARS],
                          "runbook_url": page.get("runbook"), "dashboard_url": link,
                          "on_call": page.get("on_call"), "channel": page.get("channel"),
                          "owner": None if team else owner})
    out = [Alert(labels, annotations, started, link)]
    for d in impacted[:MAX_IMPACTED_ALERTS]:
        victim = str(d.get("service"))
        vlink = (f"{dashboard_url.rstrip('/')}/services/{quote(victim, safe='')}"
                 if dashboard_url else "")
        out.append(Alert(
            _clean({"alertname": IMPACT_ALERT, "service": victim, "team": d.get("team"),
                    "severity": "info", "root_cause": service, "root_cause_team": team}),
            _clean({"incident": inc_id, "kind": kind,
                    "summary": f"{victim} is impacted by {service} ({kind}), owned by "
                               f"{owner}: not yours to fix",
                    "description": str(d.get("summary", ""))[:MAX_DESCRIPTION_CHARS],
                    "dashboard_url": vlink}),
            started, vlink))
    return out


class Sink:
    """Where alerts go; holds what it could not send yet. Subclasses: ``send_batch``."""

    kind = "sink"

    def __init__(self, url: str, max_queue: int = MAX_QUEUE) -> None:
        self.url = url
        self.max_queue = max_queue
        self.sent = 0
        self.failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.delivered: set[str] = set()  # alerts whose firing state this sink delivered
        self._retry_at = 0.0
        self._backoff = 0.0

    @property
    def name(self) -> str:
        """The URL without credentials, for metrics and messages."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def queued(self) -> int:
        raise NotImplementedError

    def firing(self, alert: Alert, now: float) -> None:
        raise NotImplementedError

    def resolved(self, alert: Alert, now: float) -> None:
        raise NotImplementedError

    async def send_batch(self, client: httpx.AsyncClient, now: float) -> None:
        """Send what is queued, counting in ``sent`` what was delivered. Raises on failure
        (what was not delivered stays queued for a retry)."""
        raise NotImplementedError

    async def flush(self, client: httpx.AsyncClient, now: float) -> None:
        if not self.queued() or now < self._retry_at:
            return
        try:
            await self.send_batch(client, now)
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self._backoff = min(max(2 * self._backoff, 1.0), BACKOFF_MAX_S)
            self._retry_at = now + self._backoff
            return
        self.last_error, self.last_success = None, now
        self._backoff, self._retry_at = 0.0, 0.0


class AlertmanagerSink(Sink):
    kind = "alertmanager"

    def __init__(self, url: str, max_queue: int = MAX_QUEUE, resend_s: float = RESEND_S) -> None:
        super().__init__(url, max_queue)
        self.resend_s = resend_s
        # key -> (alert, endsAt when resolved else None): the newest state of each alert.
        self._pending: collections.OrderedDict[str, tuple[Alert, float | None]] = \
            collections.OrderedDict()

    def queued(self) -> int:
        return len(self._pending)

    def _put(self, alert: Alert, ends_at: float | None) -> None:
        self._pending.pop(alert.key, None)
        self._pending[alert.key] = (alert, ends_at)
        while len(self._pending) > self.max_queue:
            key, _ = self._pending.popitem(last=False)
            self.delivered.discard(key)
            self.dropped += 1

    def firing(self, alert: Alert, now: float) -> None:
        self._put(alert, None)

    def resolved(self, alert: Alert, now: float) -> None:
        self._put(alert, now)

    async def send_batch(self, client: httpx.AsyncClient, now: float) -> None:
        batch = list(self._pending.items())
        body = [a.to_alertmanager(end if end is not None
                                  else now + ENDS_AFTER_RESENDS * self.resend_s)
                for _, (a, end) in batch]
        r = await client.post(self.url.rstrip("/") + "/api/v2/alerts", json=body)
        if r.status_code // 100 != 2:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        for key, sent in batch:
            if self._pending.get(key) is sent:  # not replaced while the POST was under way
                del self._pending[key]
            if sent[1] is None:
                self.delivered.add(key)
            else:
                self.delivered.discard(key)
        self.sent += len(batch)


class WebhookSink(Sink):
    kind = "webhook"

    def __init__(self, url: str, max_queue: int = MAX_QUEUE) -> None:
        super().__init__(url, max_queue)
        self._events: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._told: dict[str, str] = {}  # key -> the content last triggered (no resends)

    def queued(self) -> int:
        return len(self._events)

    def _put(self, key: str, event: dict[str, Any]) -> None:
        self._events.append((key, event))
        while len(self._events) > self.max_queue:
            key, _ = self._events.popleft()
            self.delivered.discard(key)
            self.dropped += 1

    def firing(self, alert: Alert, now: float) -> None:
        content = alert.headline
        if self._told.get(alert.key) != content:  # a stateful receiver: tell changes only
            self._told[alert.key] = content
            self._put(alert.key, alert.to_event("trigger", now))

    def resolved(self, alert: Alert, now: float) -> None:
        self._told.pop(alert.key, None)
        self._put(alert.key, alert.to_event("resolve", now))

    async def send_batch(self, client: httpx.AsyncClient, now: float) -> None:
        while self._events:  # in order: a resolve never overtakes its trigger
            key, event = self._events[0]
            r = await client.post(self.url, json=event)
            if r.status_code // 100 != 2:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            self._events.popleft()
            self.sent += 1
            if event["event_action"] == "trigger":
                self.delivered.add(key)
            else:
                self.delivered.discard(key)


class Pager:
    """Turns the open incidents into alerts at every sink (see the module doc). Its state
    (what it sent, when) is its own; it only reads the incidents."""

    def __init__(self, source: IncidentSource, sinks: Sequence[Sink],
                 dashboard_url: str | None = None, resend_s: float = RESEND_S,
                 interval_s: float = 1.0, clock: Callable[[], float] = time.time,
                 on_paged: Callable[[str, str, float], Any] | None = None) -> None:
        self.source = source
        self.sinks = list(sinks)
        self.dashboard_url = dashboard_url
        self.resend_s = resend_s
        self.interval_s = interval_s
        self.clock = clock
        self._firing: dict[str, tuple[Alert, float]] = {}  # key -> (alert, last queued at)
        # (incident id, what to say, when) for each page first delivered somewhere: the
        # incident's history records who was paged, through what, and when.
        self.on_paged = on_paged
        self._noted: set[str] = set()
        self._complained: set[str] = set()

    def tick(self, now: float | None = None) -> None:
        """Queue what changed since the last tick (new, changed, due a resend, resolved)."""
        now = self.clock() if now is None else now
        wanted: dict[str, Alert] = {}
        for incident in self.source():
            for alert in alerts_for(incident, self.dashboard_url):
                wanted.setdefault(alert.key, alert)
        for key, alert in wanted.items():
            old = self._firing.get(key)
            if old is None or old[0].headline != alert.headline \
                    or now - old[1] >= self.resend_s:
                for sink in self.sinks:
                    sink.firing(alert, now)
                self._firing[key] = (alert, now)
            else:
                self._firing[key] = (alert, old[1])  # the newest evidence rides the resend
        for key in [k for k in self._firing if k not in wanted]:
            alert, _ = self._firing.pop(key)
            self._noted.discard(key)
            for sink in self.sinks:
                sink.resolved(alert, now)

    async def flush(self, client: httpx.AsyncClient, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        await asyncio.gather(*(s.flush(client, now) for s in self.sinks))
        for note in self.newly_paged(now):
            if self.on_paged is not None:
                try:
                    await asyncio.to_thread(self.on_paged, *note)
                except Exception as exc:  # a history write never stops paging; said once
                    self._complain("recording a page in the incident's history", exc)

    def newly_paged(self, now: float) -> list[tuple[str, str, float]]:
        """Pages delivered to at least one sink since the last call: (incident id, what was
        done, when)."""
        out = []
        for key, (alert, _) in self._firing.items():
            if not alert.page or key in self._noted:
                continue
            through = [s.name for s in self.sinks if key in s.delivered]
            if through:
                self._noted.add(key)
                who = alert.labels.get("team") or alert.annotations.get("owner", "nobody")
                out.append((alert.annotations.get("incident", ""),
                            f"paged {who} through {', '.join(through)}", now))
        return out

    async def run(self, version: Callable[[], int] | None = None) -> None:
        """Tick and send every ``interval_s``, and within ``POLL_S`` of a new evaluation
        (``version()`` changed: the tick that opened an incident), so a page leaves at once."""
        seen, last = None, -math.inf
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S, trust_env=False) as client:
            while True:
                v = version() if version is not None else None
                now = time.monotonic()
                if v != seen or now - last >= self.interval_s:
                    seen, last = v, now
                    try:
                        self.tick()
                    except Exception as exc:  # a bad incident must not stop paging; said once
                        self._complain("turning incidents into alerts", exc)
                    await self.flush(client)
                await asyncio.sleep(POLL_S)

    async def last_flush(self) -> None:
        """At shutdown: one more try, within ``FINAL_FLUSH_S``, for what is still queued (a
        resolve queued just before a stop would otherwise be lost with the process)."""
        if not any(s.queued() for s in self.sinks):
            return
        async with httpx.AsyncClient(timeout=FINAL_FLUSH_S, trust_env=False) as client:
            for s in self.sinks:
                s._retry_at = 0.0  # no backoff wait: this is the last chance
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(client), FINAL_FLUSH_S)
        lost = sum(s.queued() for s in self.sinks)
        if lost:
            print(f"conway collector: paging: {lost} alerts or events were not delivered "
                  f"before stopping", file=sys.stderr, flush=True)

    def _complain(self, what: str, exc: Exception) -> None:
        key = f"{what}: {type(exc).__name__}"
        if key not in self._complained:
            self._complained.add(key)
            print(f"conway collector: paging: {what} failed ({type(exc).__name__}: {exc}); "
                  f"said once", file=sys.stderr, flush=True)

    def firing_alerts(self) -> int:
        return len(self._firing)

    def status(self) -> list[dict[str, Any]]:
        return [{"sink": s.name, "kind": s.kind, "sent": s.sent, "failures": s.failures,
                 "dropped": s.dropped, "queued": s.queued(), "last_error": s.last_error,
                 "last_success": s.last_success} for s in self.sinks]

    def collect(self) -> Iterator[Metric]:
        """``prometheus_client`` Collector."""
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "sent": CounterMetricFamily("conway_paging_sent", "Alerts (Alertmanager) or "
                                        "events (webhook) delivered", labels=["sink", "kind"]),
            "failures": CounterMetricFamily("conway_paging_send_failures", "Sends that failed "
                                            "(kept and retried with backoff)",
                                            labels=["sink", "kind"]),
            "dropped": CounterMetricFamily("conway_paging_dropped", "Alerts or events dropped "
                                           "from a full queue (MAX_QUEUE)",
                                           labels=["sink", "kind"]),
            "queued": GaugeMetricFamily("conway_paging_queued", "Alerts or events waiting to "
                                        "be sent", labels=["sink", "kind"]),
        }
        for s in self.sinks:
            for key, value in (("sent", s.sent), ("failures", s.failures),
                               ("dropped", s.dropped), ("queued", s.queued())):
                fams[key].add_metric([s.name, s.kind], value)
        yield from fams.values()
        yield GaugeMetricFamily("conway_paging_firing_alerts", "Alerts Conway holds firing",
                                value=len(self._firing))


def _clean(d: Mapping[str, Any]) -> dict[str, str]:
    """Labels and annotations are strings; an empty one means absent in Alertmanager."""
    return {k: str(v) for k, v in d.items() if v is not None and str(v) != ""}


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def install(service: Any, config: Any, diagnosis: Any) -> Pager | None:
    """Register the pager (``parts["pager"]``, ``GET /api/paging``, its /metrics collector)
    when ``--alertmanager`` or ``--page-webhook`` is given: it pages on the diagnosis' open
    incidents."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    settings = config.paging
    sinks: list[Sink] = [AlertmanagerSink(u) for u in settings.alertmanager]
    sinks += [WebhookSink(u) for u in settings.page_webhook]
    if not sinks:
        return None

    def open_incidents() -> Sequence[Mapping[str, Any]]:
        return tuple(diagnosis.latest.incidents)  # the last tick's, immutable

    pager = Pager(open_incidents, sinks, settings.dashboard_url, clock=service.clock,
                  on_paged=lambda iid, text, at: diagnosis.manager.note(iid, "paged", text, at))

    async def paging(request: Request) -> JSONResponse:
        return JSONResponse({"firing_alerts": pager.firing_alerts(), "sinks": pager.status()})

    service.parts["pager"] = pager
    service.metrics.register(pager)
    service.routes.append(Route("/api/paging", paging, methods=["GET"]))
    service.run_in_background(lambda: pager.run(lambda: int(diagnosis.latest.seq)),
                              pager.last_flush)
    return pager
