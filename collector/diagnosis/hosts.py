"""Common cause: one busy host slowing many services is one incident, not one per service.

``HostMap`` learns which host each service runs on from its spans' resource attributes, as
the SDKs and resource detectors set them (``host.name``, else ``k8s.node.name``), bounded by
``MAX_SERVICES`` (further services are counted in ``dropped``).

``SharedHosts.group`` runs on each evaluation after the root-cause step. For every host with
at least ``min_services`` services seen, it measures how much the own time of *all* of them
rose at the same moment (the host's factor: the median over its services of window over
baseline, for the p95 over the detection window and for the median over the last few
seconds, each service's larger rise over the two recent windows). Own time is a visit's self
time without the part its caller's CLIENT span adds (``Cell.own_hist``): a caller starved of
CPU reads every answer late, which lifts all its callees' self time alike and would hide a
real fault at one of them. A latency candidate on that host (a database's, on its callers'
host) stands out when its own rise is at least ``standout`` times the larger of the host's and
the upper quartile of its neighbours' rises (on a starved host, times the largest): a genuine
fault at one service, named as usual.
The others rose with their neighbours; they are not root causes of their own:

- when ``min_shared`` or more of them rose together on every tick for ``min_s`` seconds
  (2 s; a page load slows a host for a second or two), the host's factor is at least
  ``host_factor``, where the scrape gives the CPU use of the host's services one of them took
  the CPU (its use at least doubled and rose ``NEIGHBOUR_MIN_CPU`` s/s: a noisy neighbour,
  named in the evidence; load from outside the services, or their own traffic on a full
  host, is not paged), and at least two of them have no call between them (self time excludes
  callees, so a slow callee does not raise its caller's own time), they become **one**
  candidate of kind
  ``shared-host`` named after the host, whose evidence lists the services, paged to the
  host's owner when the catalog has one (a Backstage ``Resource`` named after the host);
- a noisy neighbour in plain sight (its CPU use rose ``HOG_PLAIN_CPU`` s/s and
  ``HOG_PLAIN_RISE`` times, and not through more requests at the same work each) with
  another service on the host slowed ``HOG_VICTIM_RISE`` times in self time while its
  process waited for a CPU more than before (``wait_rise``), is such a candidate too,
  however few slowed: on a quiet host the scheduler keeps most processes' short bursts going
  and only the busiest one falls behind (measured: a 2-thread hog in quote doubled the
  users' p95 through frontend alone, every other service within x1.4 by its own histogram);
  it must last ``hog_min_s`` (1 s), not ``min_s``: its CPU figures, from scrapes a second
  apart, already span a second or more of it, and a page load is not a service's process;
- errors that are nearly all calls timing out on a service that still answers most of them
  join the group while the host is busy, or, when most of them timed out (not refused),
  when the service's own time did not stand out from its neighbours' (starvation); they are
  never a standout;
- while a service on the host has a latency fault of its own (it stands out), the others'
  rise is its effect (requests pile up on every process of the host) and they are dropped;
- otherwise they are dropped too: a small shared slowdown (a page opened in a browser on the
  same machine, a GC storm) is nobody's incident.

A starved process is not slow on its own. Where the scrape gives a service's CPU use
(``process_cpu_seconds_total`` and ``process_cpu_wait_seconds_total``, see
``collector.scraper``), a candidate is **starved** when over the recent seconds its process was
runnable (running or waiting for a CPU) at least ``starved_runnable`` of the time, it waited
for a CPU at least ``wait_rise`` times as much as in the ``cpu_baseline_s`` before the
detection window (and ``min_wait_rise`` s/s more) or longer than it ran, its CPU per request
did not grow ``own_work_rise`` times (its own work did not grow: others took the CPU), and
its requests spread out as a queue does rather than all slowing alike (a sleep or a lock
adds the same time to every request, so its fastest tenth rises with its median; in a queue
some requests still get through at once, and a tail moves neither) — unless another service
on its host is the noisy neighbour right now: a process kept off the CPU for long stretches
delays every request in flight alike, which reads as a floor.
Whatever its rates, a latency candidate is starved too when the CPU wait its process (a
database's: its callers on the host) added since the judged period began covers at least
``wait_share`` of the own time its requests gained over its baseline median, and its CPU per
request did not grow (``_wait_explains``): a quiet process is never runnable long enough to
look starved by its rates, yet a browser starting on the host lifts a 20 s window's p95 of its
few requests, all of it spent waiting for a CPU. A sleep or a lock adds own time with no wait.
A busy process's requests queue behind each other while it waits, so starvation multiplies
its own time far more than its neighbours': a 400 ms sleep at a quiet service keeps it
runnable a few percent of the time and stays its own fault, while the busiest process on a
loaded host is starved. A starved candidate never stands out: it joins its host's shared
slowdown (one ``shared-host`` incident when enough of the host slowed, else nobody's
incident), and so do failures that are nearly all calls timing out, at a starved service
or one whose caller's CPU wait just rose (a starved caller's timers fire before it reads the
answer; a caller starved all along would hide a callee that hangs, unless a noisy neighbour
is on its host). The shared-host evidence
gives each slowed service's CPU wait, and the process whose CPU use rose most (a noisy
neighbour, when it is one of the host's services).

While a host that was a shared-host cause is busy, and for ``aftermath_s`` after its recent
medians last rose, the latency verdicts of its services are inhibited and kept in the shared
cause (a caller working off its backlog is the same incident, not a new fault; a starved CPU
slows a fan-out service many times more than its neighbours). So a latency fault that starts
*during* such an episode is named only once the host's medians are back; one that started
before it stands out and keeps the host from becoming a shared cause. Errors (but calls
timing out, above) and ``down`` are never inhibited. A fault that starts once the host's
medians are back is named as usual, though the 20 s windows still hold the slowdown. This
state is moved by evaluation ticks only. Services with no host attribute, or alone on their
host, are never grouped.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collector.diagnosis.assessment import DOWN, ERRORS, LATENCY, SHARED_HOST, RootCause
from collector.diagnosis.window import Cell, ServiceWindows
from collector.model import Attributes, Snapshot, SpanRecord

HOST_KEYS = ("host.name", "k8s.node.name")
# How long a host that was a shared-host cause may keep absorbing its services' slowness.
SHARED_MEMORY_S = 60.0
MAX_SERVICES = 2_000
NEIGHBOUR_MIN_CPU = 0.2  # CPU s/s a noisy neighbour's use rose by at least
# A noisy neighbour in plain sight: its CPU use rose by this many CPU s/s and at least
# HOG_PLAIN_RISE times (for the same work per request, where it serves requests). One such
# process starving one other service of CPU is enough for a shared-host incident.
HOG_PLAIN_CPU = 0.8
HOG_PLAIN_RISE = 4.0
# The self-time rise (p95 over the detection window, or the recent median) of a service
# such a neighbour starved: lower than the x2 of a shared slowdown by numbers alone, since
# the CPU figures say why it slowed. Measured on a quiet host: at x2 hogs were named 10-17 s
# in; at x1.5, 5-18 s, the victims' rises (histogram steps of 2^0.25: 1.19, 1.41, 1.68)
# flickering across the bar so the 2 s a shared host must last kept starting again.
HOG_VICTIM_RISE = 1.4
# The short look-back for a noisy neighbour that just began (with the scrape's one more second
# before it: at a 1 s scrape, two or three scrapes).
NEIGHBOUR_SHORT_S = 1.5
FLOOR_MIN_MS = 20.0  # the median own-time rise that can be a floor under every request

OwnerLookup = Callable[[str], dict[str, Any] | None]
# service, start, end -> its CPU use over that period (collector.scraper.Scraper.cpu_use)
CpuLookup = Callable[[str, float, float], Any]


class HostMap:
    """service -> host, from resource attributes (the last one seen wins)."""

    def __init__(self, max_services: int = MAX_SERVICES) -> None:
        self.max_services = max_services
        self.host_of: dict[str, str] = {}
        self.dropped = 0
        self._last: Attributes | None = None

    def learn(self, spans: Sequence[SpanRecord]) -> None:
        for s in spans:
            res = s.resource
            if res is self._last:  # one resource dict per ResourceSpans: look once
                continue
            self._last = res
            for key in HOST_KEYS:
                host = res.get(key)
                if isinstance(host, str) and host:
                    if self.host_of.get(s.service) != host:
                        if s.service not in self.host_of \
                                and len(self.host_of) >= self.max_services:
                            self.dropped += 1
                            break
                        self.host_of[s.service] = host
                    break

    def services_on(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for service, host in self.host_of.items():
            out.setdefault(host, []).append(service)
        return out


@dataclass(frozen=True, slots=True)
class HostConfig:
    min_services: int = 3  # services seen on a host before its factor means anything
    standout: float = 3.0  # a candidate's rise over the host's that names it on its own
    min_shared: int = 3  # candidates rising together that make a shared-host incident
    host_factor: float = 2.0  # the host's median rise that makes it a shared-host incident
    busy_factor: float = 1.5  # the host's median rise past which others' spread counts too
    min_samples: int = 3  # visits in a period for a service to count in the host's factor
    aftermath_s: float = 10.0  # after its host was last busy, a shared cause keeps its services
    min_s: float = 2.0  # seconds of ticks running a host must qualify before it is a cause
    # the same for a noisy neighbour in plain sight starving a service (its CPU figures
    # already span a second or more of scrapes; measured: hogs named ~4.5 s in at min_s)
    hog_min_s: float = 1.0
    starved_runnable: float = 0.3  # CPU + CPU-wait s/s of a starved process, recently
    wait_rise: float = 1.5  # its CPU wait over its wait before the detection window
    min_wait_rise: float = 0.05  # s/s: and at least this much more
    own_work_rise: float = 2.0  # CPU per request grown this much: its own work, not starved
    cpu_baseline_s: float = 60.0  # the period before the detection window its wait is
    # compared with
    floor_share: float = 0.5  # rise of the fast tenth over the median's, slowed on its own
    # Share of a latency candidate's added own time that added CPU wait of its process (a
    # database's: its callers') must cover for the rise to be the host's, not its own.
    wait_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Victim:
    """A service a noisy neighbour starved: its self-time rise and its CPU wait, s/s, then
    and before."""

    rise: float
    wait: float
    wait_before: float


@dataclass(frozen=True, slots=True)
class Rise:
    """One service's own-time rise: window over baseline, for the p95 over the detection
    window and for the median over the recent seconds (None: too few samples)."""

    p95: float | None
    recent: float | None


class SharedHosts:
    """The common-cause step of an evaluation. It reads the windows; its own state (when
    each host last was a shared cause, and since when it has qualified on every tick) is
    moved by evaluation ticks only."""

    def __init__(self, hosts: HostMap, windows: ServiceWindows, owner_of: OwnerLookup | None,
                 config: HostConfig | None = None, cpu_of: CpuLookup | None = None) -> None:
        self.hosts = hosts
        self.windows = windows
        self.owner_of = owner_of
        self.cpu_of = cpu_of
        self.cfg = config or HostConfig()
        self._last_shared: dict[str, float] = {}  # host -> when it last was a shared cause
        self._streak: dict[str, float] = {}  # host -> the first tick of its qualifying run
        self._last_busy: dict[str, float] = {}  # host -> when its recent medians last rose
        # host -> where the CPU baseline of its current shared episode ends (before it began)
        self._cpu_base_end: dict[str, float] = {}
        # What the last ``group`` left out, service -> (candidate, why): see
        # ``Assessment.held_back``.
        self.held: dict[str, tuple[RootCause, str]] = {}
        # service -> (its rise, the rise it needed to stand out) in the last ``group``: why a
        # candidate was kept in its host's slowdown, in numbers.
        self._compared: dict[str, tuple[float, float]] = {}
        # service -> (CPU wait added, own time added), s: a candidate whose added time its
        # process spent waiting for a CPU (``_wait_explains``), in the last ``group``.
        self.waited: dict[str, tuple[float, float]] = {}
        # host -> (when, the services its noisy neighbour in plain sight starved then)
        self._hog_victims: dict[str, tuple[float, dict[str, Victim]]] = {}

    def group(self, snap: Snapshot, causes: list[RootCause], t0: float,
              recent_starts: tuple[float, ...], baseline_s: float) -> list[RootCause]:
        """``causes`` with the latency candidates that rose with their host replaced by one
        ``shared-host`` cause per host (or dropped). ``recent_starts``: where the recent
        windows the root-cause step judged begin."""
        by_host = self.hosts.services_on()
        now = snap.generated_at
        held = self.held = {}
        self._compared = {}
        self.waited = {}
        recent_start = min(recent_starts, default=t0)
        # The CPU figures of every host big enough to judge, once per tick, and the hosts
        # where one service took the CPU (a noisy neighbour).
        host_cpu = {host: self._host_cpu(host, services, now, t0, recent_start)
                    for host, services in by_host.items()
                    if self.cpu_of is not None and len(services) >= self.cfg.min_services}
        hogs = {host: busiest for host, cpu in host_cpu.items()
                for busiest in (_noisy_neighbour(cpu),) if busiest is not None}
        starved = self._starved_services(snap, causes, now, t0, recent_start, baseline_s,
                                         hogs)
        # Starved, with no host to share the slowdown with: nobody's incident either.
        for c in causes:
            if c.service in starved and self._host(snap, c) is None:
                held[c.service] = (c, "starved of CPU (queued behind other work), no host known")
        causes = [c for c in causes if c.service not in held]
        latency = [(c, h) for c in causes
                   if c.kind == LATENCY or _unanswered(c) or c.service in starved
                   for h in (self._host(snap, c),) if h is not None]
        if not latency and not hogs:
            self._streak = {}
            return causes
        rises: dict[str, dict[str, Rise]] = {}
        for host in [h for _, h in latency] + sorted(hogs):
            if host not in rises and len(by_host.get(host, ())) >= self.cfg.min_services:
                rises[host] = {s: self._rise(s, now, t0, recent_starts, baseline_s)
                               for s in by_host[host]}
                if self._host_factor(rises[host], recent=True) >= self.cfg.busy_factor:
                    self._last_busy[host] = now
        shared: dict[str, list[RootCause]] = {}
        standouts: set[str] = set()  # hosts with a latency fault of their own
        # The noisy neighbour's own candidates: part of its host's incident when the others
        # slowed with it, else its own fault (its work grew: a hot loop in a new build).
        hog_causes: dict[str, list[RootCause]] = {}
        for c, host in latency:
            if c.service in starved:
                shared.setdefault(host, []).append(c)
                continue
            if hogs.get(host, {}).get("service") == c.service:
                hog_causes.setdefault(host, []).append(c)
                continue
            if host not in rises:
                continue
            own = rises[host].get(c.service) or self._rise(c.service, now, t0, recent_starts,
                                                          baseline_s)
            if c.kind != LATENCY:
                # Calls that time out on a service that still answers most of them: on a
                # busy host, or when its own time rose no more than its neighbours' did,
                # starvation, part of the shared slowdown; else its own fault.
                if self._aftermath(host, now) or max(
                        self._host_factor(rises[host], False),
                        self._host_factor(rises[host], True)) >= self.cfg.busy_factor \
                        or (_timing_out(c) and not self._stands_out(c, own, rises[host])):
                    shared.setdefault(host, []).append(c)
            elif not self._stands_out(c, own, rises[host], starved=self._aftermath(host, now)):
                shared.setdefault(host, []).append(c)
            else:
                standouts.add(host)
        for host in hogs:
            # A service took the host's CPU: whether the others slowed is judged below, with
            # or without a candidate of their own (own time hides a starved callee's slowness
            # from the root-cause step: its caller reads the answer late).
            shared.setdefault(host, [])
        streaks: dict[str, float] = {}
        grouped = {c.service for cs in [*shared.values(), *hog_causes.values()] for c in cs}
        out = [c for c in causes if c.service not in grouped]
        for host, members in sorted(shared.items()):
            hog_own = hog_causes.get(host, [])
            if host not in rises:
                out.extend(hog_own)
                # Starved, on a host too small to judge: nobody's incident.
                for c in members:
                    held[c.service] = (c, f"starved of CPU on host {host}, with too few services "
                                       f"there to judge a shared slowdown"
                                       + self._figures(c.service))
                continue
            if host in standouts and not self._aftermath(host, now):
                # One service's own slowness piles requests up on every process of its host
                # (callers wait, concurrency rises): the neighbours' rise is its effect,
                # paged with it, not a second incident.
                out.extend(hog_own)
                for c in members:
                    held[c.service] = (c, f"slowed with host {host} while another service there "
                                       f"has a latency fault of its own (its effect)")
                continue
            in_episode = now - self._last_shared.get(host, -math.inf) <= SHARED_MEMORY_S
            cpu = host_cpu.get(host, {})
            cause = self._shared_cause(snap, host, members, rises[host], cpu=cpu,
                                       now=now, t0=t0, recent_starts=recent_starts,
                                       baseline_s=baseline_s)
            if cause is not None:
                # A page load or a process starting slows a host for a second or two: a
                # shared-host incident needs the slowdown on every tick for min_s seconds.
                since = streaks[host] = self._streak.get(host, now)
                need = self.cfg.hog_min_s if cause.evidence.get("starved") else self.cfg.min_s
                if now - since < need - 1e-6:
                    for c in members + hog_own:
                        held[c.service] = (c, f"part of a shared slowdown of host {host}, "
                                           f"{now - since:.2f} of {need:g} s running so far")
                    continue
                if not in_episode:
                    self._cpu_base_end[host] = t0
                self._last_shared[host] = now
            elif self._aftermath(host, now):
                cause = self._shared_cause(snap, host, members, rises[host], aftermath=True,
                                           cpu=cpu, now=now, t0=t0,
                                           recent_starts=recent_starts, baseline_s=baseline_s)
            if cause is not None:
                out.append(cause)  # the noisy neighbour is named in it: not paged apart
            else:
                out.extend(hog_own)
                for c in members:
                    held[c.service] = (
                        c, f"rose with its neighbours on host {host}"
                        + (" (starved of CPU)" if c.service in starved else "")
                        + ": a shared slowdown too small or too short for an incident"
                        + (", after a shared-host episode" if self._aftermath(host, now)
                           else "") + self._figures(c.service))
        self._streak = streaks
        return out

    def _starved_services(self, snap: Snapshot, causes: list[RootCause], now: float,
                          t0: float, recent_start: float, baseline_s: float,
                          hogs: dict[str, dict[str, Any]]) -> set[str]:
        """The candidates starved of CPU (see the module doc), and the ones whose unanswered
        calls time out at a starved caller."""
        if self.cpu_of is None:
            return set()
        memo: dict[str, bool] = {}

        def starved(service: str, recent: bool, rising: bool = False) -> bool:
            key = f"{service}\0{recent}\0{rising}"
            if key not in memo:
                memo[key] = self._starved(service, now, t0, recent_start if recent else t0,
                                          rising)
            return memo[key]

        def hog_on(service: str) -> str | None:
            """The noisy neighbour on ``service``'s host right now, if one took the CPU."""
            host = self.hosts.host_of.get(service)
            return hogs[host]["service"] if host in hogs else None

        out: set[str] = set()
        for c in causes:
            recent = c.evidence.get("window") == "recent"
            if c.kind == LATENCY:
                # The floor is judged on the last few seconds whichever window named it: a
                # sleep that began there lifts every request since, while the detection
                # window still holds the seconds before it. While another service on its
                # host burns the CPU it lost, a starved process is that one's victim even
                # when every request slowed alike: kept off the CPU for long stretches, it
                # delays every request in flight by about the same (measured: frontend's
                # fastest tenth 3 -> 90 ms, its median 5 -> 126 ms, runnable 1.06 s/s of
                # which 0.80 waiting, beside a four-thread hog at ad).
                if starved(c.service, recent) and (
                        hog_on(c.service) not in (None, c.service)
                        or not self._floor_rose(c.service, recent_start, now, t0,
                                                baseline_s)):
                    out.add(c.service)
                elif hog_on(c.service) != c.service:
                    waited = self._wait_explains(snap, c, now, t0,
                                                 recent_start if recent else t0, baseline_s)
                    if waited is not None:
                        self.waited[c.service] = waited
                        out.add(c.service)
            elif c.kind == ERRORS and _timing_out(c) and _mostly_unanswered(c) \
                    and not c.virtual:
                # Calls timing out on it: it, or a caller whose wait just rose, is starved
                # (a starved caller's timers fire before it reads the answer). Not a caller
                # starved all along: that would hide a callee that hangs on a busy host,
                # unless a service on the host is burning the CPU right now (the hog may be
                # this service itself: its callers' timers are what fire).
                callers = {src for src, dst in snap.edges if dst == c.service}
                if starved(c.service, recent) \
                        or any(starved(s, recent, rising=hog_on(s) is None)
                               for s in callers):
                    out.add(c.service)
        return out

    def _starved(self, service: str, now: float, t0: float, start: float,
                 rising: bool = False) -> bool:
        cfg = self.cfg
        pair = self._cpu_pair(service, start, now, t0)
        if pair is None:
            return False
        recent, base = pair
        if recent.cpu + recent.wait < cfg.starved_runnable:
            return False
        if recent.wait < max(cfg.wait_rise * base.wait, base.wait + cfg.min_wait_rise) \
                and (rising or recent.wait < recent.cpu):
            return False  # it waits no more than before, nor longer than it runs
        return not self._own_work_grew(recent, base)  # (slow on its own, or the hog itself)

    def _own_work_grew(self, recent: Any, base: Any) -> bool:
        """Whether a process's CPU per request grew ``own_work_rise`` times (``CpuUse``
        figures): its own work, not a CPU others took."""
        if recent.requests > 0 and base.requests > 0 and base.cpu > 0:
            grew = (recent.cpu / recent.requests) / (base.cpu / base.requests)
            return bool(grew >= self.cfg.own_work_rise)
        return False

    def _since(self, service: str, start: float, now: float) -> Cell:
        """A service's visits since ``start``: from the fine buckets when that is recent, else
        from the window's buckets."""
        w = self.windows
        return w.recent(service, start, now) if start > now - 2 * w.bucket_s \
            else w.aggregate(service, start, now)

    def _wait_explains(self, snap: Snapshot, c: RootCause, now: float, t0: float,
                       start: float, baseline_s: float) -> tuple[float, float] | None:
        """``(CPU wait added, own time added)`` in seconds since ``start`` when the first
        covers at least ``wait_share`` of the second: the time its requests gained was spent
        runnable, waiting for a CPU another process held (a browser starting, a backup), not
        in its own code. A quiet process (email, a few requests a second) is never runnable
        long enough to count as starved by its CPU rates, yet a second-long burst on the host
        lifts a 20 s window's p95 of its few requests past any threshold (measured: email's
        p95 8 -> 106 ms on 34 requests, in 3 of 8 headless Chromium starts beside the demo).
        A sleep, a lock or a slow call not traced adds own time with no CPU wait; work that
        grew (its CPU per request at least ``own_work_rise`` times) is its own. A database's
        time is measured in its callers' processes: their added wait is compared."""
        w = self.windows
        cell = self._since(c.service, start, now)
        base = w.baseline(c.service, t0 - w.bucket_s, baseline_s)
        ref = base.own_hist.quantile(0.5)
        if ref is None or cell.own_hist.samples < self.cfg.min_samples:
            return None
        added_own = cell.own_hist.excess_ms(ref) / 1000.0
        if added_own <= 0.0:
            return None
        host = self._host(snap, c)
        if c.virtual and host is None:
            return None  # its callers are on several hosts (or none known)
        procs = [c.service] if not c.virtual else sorted(
            {src for src, dst in snap.edges if dst == c.service
             and self.hosts.host_of.get(src) == host})
        added_wait = 0.0
        for proc in procs:
            pair = self._cpu_pair(proc, start, now, t0)
            if pair is None:
                return None  # a process with no CPU figures: nothing to explain it with
            recent, base_use = pair
            if self._own_work_grew(recent, base_use):
                return None
            added_wait += max(0.0, recent.wait - base_use.wait) * recent.seconds
        if not procs or added_wait < self.cfg.wait_share * added_own:
            return None
        return added_wait, added_own

    def _floor_rose(self, service: str, start: float, now: float, t0: float,
                    baseline_s: float) -> bool:
        """Whether nearly every request got slower by about the same amount (a sleep, a lock,
        a slow call not traced): since ``start`` its median own time rose at least
        ``FLOOR_MIN_MS`` over its baseline's, and its fastest tenth rose at least
        ``floor_share`` as much. Requests queued behind a starved process spread out instead:
        some get through at once, the rest wait in line (for exponential waits the fastest
        tenth is near a sixth of the median), and a tail alone moves neither."""
        w = self.windows
        cell = self._since(service, start, now)
        base = w.baseline(service, t0 - w.bucket_s, baseline_s)
        if cell.own_hist.samples < self.cfg.min_samples \
                or base.own_hist.samples < self.cfg.min_samples:
            return False
        q = [h.quantile(p) for h in (cell.own_hist, base.own_hist) for p in (0.1, 0.5)]
        if any(v is None for v in q):
            return False
        p10, p50, b10, b50 = (float(v or 0.0) for v in q)
        rise = p50 - b50
        return rise >= FLOOR_MIN_MS and p10 - b10 >= self.cfg.floor_share * rise

    def _host_cpu(self, host: str, services: list[str], now: float, t0: float,
                  recent_start: float) -> dict[str, tuple[Any, Any]]:
        """The CPU figures of a host's services (see ``_cpu_figures``; during a shared-host
        episode the baseline stays where the episode began, so a long hog is not learnt as
        normal) over the recent seconds the root-cause step
        judged, or, when only they show a noisy neighbour, over the last few scrapes: a hog
        seconds old is diluted in the longer average, while its victims' latency shows in the
        traces within a second (measured: frontend paged 3.5 s before a two-thread hog at
        quote, 0.37 CPU s/s, was seen)."""
        in_episode = now - self._last_shared.get(host, -math.inf) <= SHARED_MEMORY_S
        base_end = self._cpu_base_end.get(host, t0) if in_episode else t0
        cpu = self._cpu_figures(services, now, base_end, recent_start)
        if cpu and _noisy_neighbour(cpu) is None:
            short = self._cpu_figures(services, now, base_end, now - NEIGHBOUR_SHORT_S)
            if _noisy_neighbour(short) is not None:
                return short
        return cpu

    def _cpu_figures(self, services: list[str], now: float, t0: float,
                     recent_start: float) -> dict[str, tuple[Any, Any]]:
        """service -> (CPU use recently, before the detection window), where the scrape has
        them."""
        return {s: pair for s in services
                for pair in (self._cpu_pair(s, recent_start, now, t0),) if pair is not None}

    def _cpu_pair(self, service: str, start: float, now: float,
                  base_end: float) -> tuple[Any, Any] | None:
        """(CPU use from the scrape behind the first traces judged, since ``start``, to the
        newest one; CPU use over the ``cpu_baseline_s`` before ``base_end``), or None."""
        if self.cpu_of is None:
            return None
        recent = self.cpu_of(service, start - 1.0, now)
        base = self.cpu_of(service, base_end - self.cfg.cpu_baseline_s, base_end)
        return (recent, base) if recent is not None and base is not None else None

    def _aftermath(self, host: str, now: float) -> bool:
        """Whether ``host`` is a shared-host cause that was busy (in the last few seconds'
        medians) within ``aftermath_s``: its services are still working off the slowdown (a
        caller's backlog), the same incident, not a new fault at each of them. Its 20 s
        windows stay full of the slowdown longer; a fault that starts once its medians are
        back is named as usual."""
        return now - self._last_shared.get(host, -math.inf) <= SHARED_MEMORY_S \
            and now - self._last_busy.get(host, -math.inf) <= self.cfg.aftermath_s

    def _host(self, snap: Snapshot, c: RootCause) -> str | None:
        """The host a candidate's time was measured on: its own, or for a virtual node (a
        database, seen only in its callers' CLIENT spans) its callers' when they share one."""
        host = self.hosts.host_of.get(c.service)
        if host is not None or not c.virtual:
            return host
        callers = {self.hosts.host_of.get(src) for src, dst in snap.edges if dst == c.service}
        return callers.pop() if len(callers) == 1 else None

    def _rise(self, service: str, now: float, t0: float, recent_starts: tuple[float, ...],
              baseline_s: float, own: bool = True) -> Rise:
        w = self.windows
        base = w.baseline(service, t0 - w.bucket_s, baseline_s)
        win = w.aggregate(service, t0, now)
        recent = [r for start in recent_starts
                  for r in (self._ratio(w.recent(service, start, now), base, 0.5, own),)
                  if r is not None]
        return Rise(self._ratio(win, base, 0.95, own), max(recent) if recent else None)

    def _ratio(self, win: Cell, base: Cell, q: float, own: bool = True) -> float | None:
        h_w, h_b = (win.own_hist, base.own_hist) if own else (win.self_hist, base.self_hist)
        if h_w.samples < self.cfg.min_samples or h_b.samples < self.cfg.min_samples:
            return None
        p_w, p_b = h_w.quantile(q), h_b.quantile(q)
        if p_w is None or p_b is None:
            return None
        return p_w / max(p_b, 1e-3)

    def _host_factor(self, rises: dict[str, Rise], recent: bool) -> float:
        vals = [r.recent if recent else r.p95 for r in rises.values()]
        known = [v for v in vals if v is not None]
        return statistics.median(known) if len(known) >= self.cfg.min_services else 1.0

    def _stands_out(self, c: RootCause, own: Rise, rises: dict[str, Rise],
                    starved: bool = False) -> bool:
        """Whether ``c`` rose clearly more than the rest of its host at the same moment:
        ``standout`` times the host's median rise; when the host as a whole slowed (a starved
        CPU slows some processes far more than others), times the upper quartile of the
        other services' rises too, and on a host slowed as much as a shared-host incident
        needs, times the largest of them."""
        recent = c.evidence.get("window") == "recent"
        mine = own.recent if recent else own.p95
        if mine is None:
            # No baseline before the detection window (a fresh collector, or one marked
            # out as an earlier incident's victim): the rise the candidate was found with.
            mine = _evidence_rise(c)
        others = sorted(v for s, r in rises.items() if s != c.service
                        for v in (r.recent if recent else r.p95,) if v is not None)
        if starved:
            # The host is a shared cause right now: its services' latency verdicts are
            # inhibited (as Alertmanager inhibits a service's alerts under its node's) and
            # listed in that incident. A starved CPU slows a process by the number of times
            # it waits for it, so a fan-out service's own time rises many times more than
            # its neighbours' (measured: frontend x64 beside x13 for the worst other).
            return False
        if mine is None or len(others) < self.cfg.min_services - 1:
            return True  # nothing to compare with: judged on its own
        host = max(1.0, self._host_factor(rises, recent))
        # A busy CPU slows some processes far more than others, and a few seconds of
        # medians are noisy: it must outdo the upper quartile of the others' rises, and on
        # a host slowed as much as a shared-host incident needs, the largest of them.
        ref = max(host, others[(3 * len(others)) // 4])
        if host >= self.cfg.host_factor:
            ref = max(ref, others[-1])
        self._compared[c.service] = (mine, self.cfg.standout * ref)
        return mine >= self.cfg.standout * ref

    def _figures(self, service: str) -> str:
        """How far a held candidate's own time rose against what would have named it, or
        how much of the time it added its process spent waiting for a CPU."""
        if service in self.waited:
            wait, own = self.waited[service]
            return (f" (its requests gained {own:.2f} s of own time while its process waited "
                    f"{wait:.2f} s more than before for a CPU)")
        if service not in self._compared:
            return ""
        mine, needed = self._compared[service]
        return f" (its own time x{mine:.1f}; standing out needs x{needed:.1f})"

    def _shared_cause(self, snap: Snapshot, host: str, members: list[RootCause],
                      rises: dict[str, Rise], *, now: float, t0: float,
                      recent_starts: tuple[float, ...], baseline_s: float,
                      aftermath: bool = False,
                      cpu: dict[str, tuple[Any, Any]] | None = None) -> RootCause | None:
        names = sorted(c.service for c in members)
        cpu = cpu or {}
        busiest = _noisy_neighbour(cpu)
        if busiest is not None:
            # One of the host's services took the CPU: how far the others slowed is judged
            # on their self time, which holds their callers' late reading of the answers (a
            # starved caller reads late; own time leaves that out, so only the busiest
            # process, queueing its own requests, would seem to slow). The slowed services
            # need not be candidates of their own.
            rises = {s: self._rise(s, now, t0, recent_starts, baseline_s, own=False)
                     for s in rises}
        slowed = sorted({s for s, r in rises.items()
                         if max(r.p95 or 0.0, r.recent or 0.0) >= 2.0} | set(names),
                        key=lambda s: (-max(rises[s].p95 or 0.0, rises[s].recent or 0.0)
                                       if s in rises else 0.0, s))
        judged = slowed if busiest is not None else names
        # Self time excludes callees, so one slow service does not raise its callers' own
        # time; still, at least two of them must have no call between them.
        unlinked = any((a, b) not in snap.edges and (b, a) not in snap.edges
                       for i, a in enumerate(judged) for b in judged[i + 1:])
        factor = max(self._host_factor(rises, False), self._host_factor(rises, True))
        starved_by_hog: dict[str, Victim] = {}
        if not aftermath and (len(judged) < self.cfg.min_shared
                              or factor < self.cfg.host_factor or not unlinked):
            # Too few slowed for a shared slowdown by numbers alone; but a process burning
            # cores it did not use before, while another service on the host waits for a
            # CPU and slowed, is the host's incident all the same (measured: a 2-thread
            # hog in quote on a quiet 2-core host doubled the users' p95 through frontend
            # alone, every other service within x1.4). Its CPU is also read over the short
            # look-back: the recent window's rate dilutes a hog that began a second or two
            # ago (measured: its +0.8 s/s reached there ~3 s in).
            plain = False
            if busiest is not None:
                hog = busiest["service"]
                looks = (cpu, self._cpu_figures(sorted(rises), now, t0,
                                                now - NEIGHBOUR_SHORT_S))
                plain = self._plain_hog(hog, looks)
                if plain:
                    starved_by_hog = self._starved_by_hog(hog, looks, rises)
            seen = self._hog_victims.get(host)
            if starved_by_hog:
                self._hog_victims[host] = (now, starved_by_hog)
            elif plain and seen is not None and now - seen[0] <= self.cfg.min_s:
                # Its victims' rises and waits sit near their bars and flicker across
                # them tick by tick; while the hog burns on, the ones seen in the last
                # min_s seconds still count (else the 2 s a shared host must last kept
                # starting again: a recommendation hog named 11 s in, not 5).
                starved_by_hog = seen[1]
            if not plain:
                self._hog_victims.pop(host, None)
            if not starved_by_hog:
                return None
            slowed = slowed + [s for s in starved_by_hog if s not in slowed]
        if not aftermath and busiest is None and len(cpu) >= self.cfg.min_services:
            # The scrape shows the CPU use of the host's services and none of them took more:
            # the load came from outside them (a browser, a burner, a backup) or is the
            # services' own traffic on a full host. Nobody's page, as a page load is: their
            # latency verdicts stay grouped and dropped.
            return None
        owner = self.owner_of(host) if self.owner_of else None
        team = owner.get("team") if owner else None
        shown = ", ".join(slowed[:8]) + (f" and {len(slowed) - 8} more" if len(slowed) > 8
                                         else "")
        if aftermath:
            summary = (f"host {host}: {shown} still slow after the host's shared slowdown "
                       f"(median x{factor:.1f} over its {len(rises)} services)")
        elif starved_by_hog and busiest is not None:
            waits = ", ".join(
                f"{s} (self time x{v.rise:.1f}, waiting for a CPU {v.wait:.2f} s per second, "
                f"up from {v.wait_before:.2f})" for s, v in starved_by_hog.items())
            summary = (f"host {host}: {busiest['service']} took the CPU and starved {waits}; "
                       f"the other {len(rises) - len(starved_by_hog) - 1} services there "
                       f"slowed less (median x{factor:.1f}). One busy host, not a fault of "
                       f"{' or '.join(starved_by_hog)}")
        else:
            summary = (f"host {host}: the {'self' if busiest is not None else 'own'} time of "
                       f"{len(slowed)} of its {len(rises)} "
                       f"services rose together (median x{factor:.1f}), not through calls "
                       f"between them: {shown}. One busy host, not {len(slowed)} faults")
        if busiest is not None:
            summary += (f". {busiest['service']} uses {busiest['cpu_per_s']:.2f} CPU seconds "
                        f"per second, up from {busiest['cpu_per_s_before']:.2f}")
        confidence = round(min(0.95, 0.5 + 0.05 * len(slowed)), 3)
        evidence = {"summary": summary, "services": slowed, "host": host,
                    "trace_ids": ([t for c in members for t in c.evidence["trace_ids"]]
                                  or self._slow_traces(slowed, t0, now))[:5],
                    "counts": {"services": len(rises), "slowed": len(slowed),
                               "host_factor": round(factor, 2), "excess": 0},
                    "before": {s: {"cpu_wait_per_s": _r(cpu[s][1].wait)}
                               for s in slowed if s in cpu},
                    "after": {s: {"p95_rise": _r(r.p95), "recent_median_rise": _r(r.recent),
                                  **({"cpu_wait_per_s": _r(cpu[s][0].wait)} if s in cpu
                                     else {})}
                              for s, r in sorted(rises.items()) if s in slowed}}
        if busiest is not None:
            evidence["busiest"] = busiest
        if starved_by_hog:
            evidence["starved"] = sorted(starved_by_hog)
        return RootCause(host, SHARED_HOST, team if isinstance(team, str) else None, False,
                         confidence, evidence, host=host)

    def _plain_hog(self, hog: str, looks: tuple[dict[str, tuple[Any, Any]], ...]) -> bool:
        """Whether the noisy neighbour ``hog`` is in plain sight: in one of ``looks`` (the
        CPU figures, recent and before, of the host's services over one or more recent
        periods) its CPU use rose ``HOG_PLAIN_CPU`` s/s and ``HOG_PLAIN_RISE`` times, and
        not through more requests at the same work each (where it serves requests)."""
        def plain(recent: Any, base: Any) -> bool:
            if recent.cpu - base.cpu < HOG_PLAIN_CPU or recent.cpu < HOG_PLAIN_RISE * base.cpu:
                return False
            # its traffic grew, not its work per request: its own load
            return recent.requests <= 0 or base.requests <= 0 \
                or self._own_work_grew(recent, base)

        return any(hog in cpu and plain(*cpu[hog]) for cpu in looks)

    def _starved_by_hog(self, hog: str, looks: tuple[dict[str, tuple[Any, Any]], ...],
                        rises: dict[str, Rise]) -> dict[str, Victim]:
        """The services a noisy neighbour in plain sight (``_plain_hog``) starved: each
        slowed at least ``HOG_VICTIM_RISE`` times in self time while its process waited for
        a CPU ``wait_rise`` times as long as before (and ``min_wait_rise`` s/s more), in one
        of ``looks``."""
        cfg = self.cfg
        out = {}
        for s, r in sorted(rises.items()):
            rise = max(r.p95 or 0.0, r.recent or 0.0)
            if s == hog or rise < HOG_VICTIM_RISE:
                continue
            for cpu in looks:
                if s in cpu and cpu[s][0].wait >= max(cfg.wait_rise * cpu[s][1].wait,
                                                      cpu[s][1].wait + cfg.min_wait_rise):
                    out[s] = Victim(rise, cpu[s][0].wait, cpu[s][1].wait)
                    break
        return out

    def _slow_traces(self, services: list[str], t0: float, now: float) -> list[str]:
        """Example traces of the slowest visits of ``services`` since ``t0``, one each."""
        out: list[str] = []
        for s in services:
            slow = self.windows.aggregate(s, t0, now).slow_traces
            if slow and slow[0][1].hex() not in out:
                out.append(slow[0][1].hex())
        return out


def _noisy_neighbour(cpu: dict[str, tuple[Any, Any]]) -> dict[str, Any] | None:
    """The service whose CPU use rose most, when it at least doubled and rose by
    ``NEIGHBOUR_MIN_CPU`` s/s: a process taking the host's CPU from the others."""
    hog = max(cpu.items(), key=lambda kv: kv[1][0].cpu - kv[1][1].cpu, default=None)
    if hog is None:
        return None
    name, (recent, base) = hog
    if recent.cpu < max(2 * base.cpu, base.cpu + NEIGHBOUR_MIN_CPU):
        return None
    return {"service": name, "cpu_per_s": round(recent.cpu, 2),
            "cpu_per_s_before": round(base.cpu, 2)}


def _unanswered(c: RootCause) -> bool:
    """An errors (or down) candidate whose failures are nearly all calls that got no answer
    while the service still served more than that: callers timing out on it."""
    if c.kind not in (ERRORS, DOWN) or c.virtual:
        return False
    counts = c.evidence.get("counts", {})
    no_answer = float(counts.get("no_answer_errors", 0) or 0)
    origins = float(counts.get("origin_errors", 0) or 0)
    served = float(counts.get("requests", 0) or 0) - no_answer
    return no_answer > 0 and no_answer >= 0.8 * origins and served > no_answer


def _mostly_unanswered(c: RootCause) -> bool:
    """Whether nearly all of a candidate's failures are calls that got no answer."""
    counts = c.evidence.get("counts", {})
    no_answer = float(counts.get("no_answer_errors", 0) or 0)
    return no_answer > 0 and no_answer >= 0.8 * float(counts.get("origin_errors", 0) or 0)


def _timing_out(c: RootCause) -> bool:
    """Whether most of a candidate's unanswered calls timed out (starved or hung) rather
    than being refused (a process going away, whose own time need not rise at all)."""
    counts = c.evidence.get("counts", {})
    no_answer = float(counts.get("no_answer_errors", 0) or 0)
    return no_answer > 0 and float(counts.get("no_answer_timeouts", 0) or 0) >= 0.5 * no_answer


def _evidence_rise(c: RootCause) -> float | None:
    """Own-time p95 after over before, from a candidate's evidence (None: not given)."""
    before = c.evidence.get("before", {}).get("own_p95_ms")
    after = c.evidence.get("after", {}).get("own_p95_ms")
    if isinstance(before, int | float) and isinstance(after, int | float) and before > 0:
        return float(after) / float(before)
    return None


def _r(v: float | None) -> float | None:
    return round(v, 2) if v is not None else None
