"""The Prometheus scraper: what only metrics know about a service (``up``, unsampled counts).

Targets come from ``--scrape URL`` and from the topology file (each service's port ->
``http://127.0.0.1:PORT/metrics``). Every ``interval_s`` all targets are fetched concurrently
with httpx and parsed with ``prometheus_client.parser``. Per target the scraper keeps ``up``,
the last scrape time and error, counted failures, and the totals of
``http_server_requests_total`` (all, and those with a 5xx status label) when the target exports
it, and, when it exports ``process_cpu_seconds_total`` and ``process_cpu_wait_seconds_total``,
the last ``CPU_HISTORY`` scrapes of those with its request total, from which ``cpu_use`` gives
a service's CPU, CPU-wait and request rates over a period (``collector.diagnosis.hosts`` uses
them to tell a starved process from one slow on its own). A target's service is its topology
name, else a ``service`` / ``service_name`` label on ``target_info`` (or on any sample), else
the target's host:port. `ScraperCollector` puts each target's scrapes, failures and ``up`` on
``/metrics``.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from collector.config import CollectorConfig
from collector.service import CollectorService
from collector.topology import service_ports

SCRAPE_TIMEOUT_S = 2.0
MAX_SCRAPE_BYTES = 4 * 1024 * 1024
MAX_ERROR_CHARS = 300
REQUESTS_FAMILY = "http_server_requests"
CPU_FAMILY = "process_cpu_seconds"
CPU_WAIT_FAMILY = "process_cpu_wait_seconds"
# Scrapes of CPU use kept per target: 10 minutes at the demo's 1 s interval.
CPU_HISTORY = 600
MIN_CPU_SPAN_S = 1.5  # a rate needs scrapes at least this far apart
_STATUS_LABELS = ("status", "status_code", "code", "http_status_code", "http_response_status_code")
_SERVICE_LABELS = ("service", "service_name", "job")


@dataclass
class Target:
    url: str
    service: str
    named: bool  # the service name came from configuration, not from the scraped metrics
    up: bool | None = None  # None until the first scrape finished
    # The last scrape failed by timing out: the process may be starved or hung, not gone
    # (``up`` is still False, as Prometheus has it; diagnosis does not read it as "down").
    timed_out: bool = False
    # The last scrape's connection was refused: nothing listens there. ``was_up``: some
    # scrape before succeeded. Both together are a process gone (diagnosis reads it so),
    # where a target never yet up is only one still starting.
    refused: bool = False
    was_up: bool = False
    last_scrape: float | None = None
    last_error: str | None = None
    scrapes: int = 0
    failures: int = 0
    requests_total: float | None = None
    errors_total: float | None = None
    # (scrape time, CPU seconds, CPU-wait seconds, requests) of the last CPU_HISTORY scrapes
    # that had both CPU families.
    cpu: deque[tuple[float, float, float, float]] = field(
        default_factory=lambda: deque(maxlen=CPU_HISTORY))


class CpuUse(NamedTuple):
    """A process's rates over a period, per second: CPU time used, time runnable but waiting
    for a CPU, and requests served."""

    cpu: float
    wait: float
    requests: float
    seconds: float


class Parsed(NamedTuple):
    requests: float | None
    errors: float | None
    service: str | None
    cpu_seconds: float | None = None
    cpu_wait_seconds: float | None = None


def _refused(exc: BaseException) -> bool:
    """Whether a failed connect was refused (ECONNREFUSED somewhere in its causes), as
    against unreachable, reset or timed out."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or getattr(cur, "errno", None) == \
                errno.ECONNREFUSED:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def topology_targets(path: Path, host_template: str = "127.0.0.1") -> dict[str, str]:
    """Service name -> metrics URL from the topology file's service ports.

    ``host_template`` is the host each service is scraped at, ``{service}`` standing for its
    name: ``127.0.0.1`` for the local demo, ``{service}`` in containers (``http://payment:8109``).
    """
    return {name: f"http://{host_template.replace('{service}', name)}:{port}/metrics"
            for name, port in service_ports(path).items()}


def parse_metrics(text: str) -> Parsed:
    """Requests total, 5xx total, service name and the process's CPU and CPU-wait totals
    from an exposition text; raises ValueError."""
    requests: float | None = None
    errors: float | None = None
    service: str | None = None
    cpu: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in (CPU_FAMILY, CPU_WAIT_FAMILY):
            for sample in family.samples:
                if sample.name == family.name + "_total" and not sample.labels:
                    cpu[family.name] = sample.value
        if family.name == REQUESTS_FAMILY:
            requests = requests or 0.0
            errors = errors or 0.0
            for sample in family.samples:
                if sample.name != REQUESTS_FAMILY + "_total":
                    continue
                requests += sample.value
                status = next((sample.labels[k] for k in _STATUS_LABELS if k in sample.labels), "")
                if status.startswith("5"):
                    errors += sample.value
        if service is None:
            for sample in family.samples:
                name = next((sample.labels[k] for k in _SERVICE_LABELS[:2] if k in sample.labels),
                            None)
                if name:
                    service = name
                    break
        if family.name in ("target", "target_info") and family.samples:
            # target_info wins over a label found on an ordinary sample.
            name = family.samples[0].labels.get("service_name") or family.samples[0].labels.get(
                "service"
            )
            if name:
                service = name
    return Parsed(requests, errors, service, cpu.get(CPU_FAMILY), cpu.get(CPU_WAIT_FAMILY))


class Scraper:
    """Scrapes its targets; ``scrape_once`` is the whole cycle, ``run`` repeats it."""

    def __init__(
        self,
        urls: Iterable[str] = (),
        named: dict[str, str] | None = None,
        interval_s: float = 5.0,
        clock: Callable[[], float] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"scrape interval must be > 0 seconds, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._transport = transport
        self._targets: dict[str, Target] = {}
        for service, url in (named or {}).items():
            self._targets[url] = Target(url, service, named=True)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"scrape target {url!r} is not an http(s) URL")
            if url not in self._targets:
                self._targets[url] = Target(url, parts.netloc, named=False)
        # service -> its targets: the diagnosis asks for each service's CPU use every tick.
        self._by_service: dict[str, list[Target]] = {}
        for t in self._targets.values():
            self._by_service.setdefault(t.service, []).append(t)

    def targets(self) -> list[Target]:
        return list(self._targets.values())

    @property
    def failures(self) -> int:
        return sum(t.failures for t in self._targets.values())

    def up_by_service(self) -> dict[str, bool | None]:
        out: dict[str, bool | None] = {}
        for t in self._targets.values():
            prev = out.get(t.service)
            # A service with several targets is up when any of them is.
            out[t.service] = t.up if prev is None else (prev or bool(t.up))
        return out

    def refused_services(self) -> set[str]:
        """Services that answered a scrape before and whose every target's last scrape was
        refused (nothing listens there any more)."""
        return self._every_target(lambda t: t.up is False and t.refused and t.was_up)

    def timed_out_services(self) -> set[str]:
        """Services whose every target's last scrape failed by timing out."""
        return self._every_target(lambda t: t.up is False and t.timed_out)

    def _every_target(self, holds: Callable[[Target], bool]) -> set[str]:
        out: dict[str, bool] = {}
        for t in self._targets.values():
            out[t.service] = out.get(t.service, True) and holds(t)
        return {s for s, v in out.items() if v}

    def cpu_use(self, service: str, start: float, end: float) -> CpuUse | None:
        """``service``'s CPU, CPU-wait and request rates between the first scrape at or
        after ``start`` and the last at or before ``end`` (summed over its targets), or None
        when no target exports the CPU families or fewer than ``MIN_CPU_SPAN_S`` lie between.
        A counter that fell (a restart, a thread ending) starts the period afresh there."""
        rates: list[CpuUse] = []
        for t in self._by_service.get(service, ()):
            samples = [s for s in t.cpu if start <= s[0] <= end]
            for i in range(len(samples) - 1, 0, -1):
                if any(b < a for a, b in zip(samples[i - 1][1:], samples[i][1:], strict=True)):
                    samples = samples[i:]
                    break
            if len(samples) < 2 or samples[-1][0] - samples[0][0] < MIN_CPU_SPAN_S:
                continue
            (t0, c0, w0, r0), (t1, c1, w1, r1) = samples[0], samples[-1]
            dt = t1 - t0
            rates.append(CpuUse((c1 - c0) / dt, (w1 - w0) / dt, (r1 - r0) / dt, dt))
        if not rates:
            return None
        return CpuUse(sum(r.cpu for r in rates), sum(r.wait for r in rates),
                      sum(r.requests for r in rates), min(r.seconds for r in rates))

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    async def scrape_once(self) -> None:
        async with httpx.AsyncClient(
            timeout=SCRAPE_TIMEOUT_S, transport=self._transport, follow_redirects=False
        ) as client:
            await asyncio.gather(*(self._scrape(client, t) for t in self._targets.values()))

    async def _scrape(self, client: httpx.AsyncClient, t: Target) -> None:
        error: str | None = None
        parsed: Parsed | None = None
        timed_out = refused = False
        try:
            r = await client.get(t.url, headers={"Accept": "text/plain"})
            if r.status_code != 200:
                error = f"HTTP {r.status_code} from {t.url}"
            elif len(r.content) > MAX_SCRAPE_BYTES:
                error = f"metrics page larger than {MAX_SCRAPE_BYTES} bytes"
            else:
                parsed = parse_metrics(r.text)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            timed_out = isinstance(exc, httpx.TimeoutException)
            refused = isinstance(exc, httpx.ConnectError) and _refused(exc)
        except ValueError as exc:
            error = f"unparseable metrics: {exc}"
        t.scrapes += 1
        t.last_scrape = self._now()
        t.timed_out = timed_out
        t.refused = refused
        if parsed is None:
            t.up = False
            t.failures += 1
            t.last_error = (error or "unknown error")[:MAX_ERROR_CHARS]
            return
        t.up = t.was_up = True
        t.last_error = None
        t.requests_total, t.errors_total, service = parsed[:3]
        if service and not t.named and service != t.service:
            self._by_service[t.service].remove(t)
            t.service = service
            self._by_service.setdefault(service, []).append(t)
        if parsed.cpu_seconds is not None and parsed.cpu_wait_seconds is not None:
            t.cpu.append((t.last_scrape, parsed.cpu_seconds, parsed.cpu_wait_seconds,
                          parsed.requests or 0.0))

    async def run(self) -> None:
        while True:
            await self.scrape_once()
            await asyncio.sleep(self.interval_s)


class ScraperCollector(Collector):
    """Each target's scrapes, failures and ``up`` on ``/metrics``; with no scraper, the same
    families without samples."""

    def __init__(self, scraper: Scraper | None) -> None:
        self.scraper = scraper

    def collect(self) -> Iterator[Metric]:
        labels = ["target", "service"]
        failures = CounterMetricFamily("conway_scrape_failures", "Failed scrapes per target",
                                       labels=labels)
        up = GaugeMetricFamily("conway_scrape_up", "1 when the last scrape of a target worked",
                               labels=labels)
        scrapes = CounterMetricFamily("conway_scrapes",
                                      "Scrapes per target (failed ones included)",
                                      labels=labels)
        if self.scraper is not None:
            for t in self.scraper.targets():
                failures.add_metric([t.url, t.service], t.failures)
                up.add_metric([t.url, t.service], 1.0 if t.up else 0.0)
                scrapes.add_metric([t.url, t.service], t.scrapes)
        yield failures
        yield up
        yield scrapes


def install(service: CollectorService, config: CollectorConfig) -> Scraper | None:
    """Register the scraper (parts["scraper"]) when there is anything to scrape, and its
    /metrics collector in any case."""
    host_template = config.scrape_host_template
    named = (topology_targets(config.topology, host_template)
             if config.topology is not None else {})
    if not named and not config.scrape:
        service.metrics.register(ScraperCollector(None))
        return None
    scraper = Scraper(config.scrape, named, config.scrape_interval_s, clock=service.clock)
    service.metrics.register(ScraperCollector(scraper))
    service.parts["scraper"] = scraper
    service.run_in_background(scraper.run)
    return scraper
