"""The dashboard's Prometheus source against Debian's real Prometheus scraping two real
collectors, each fed the traces of its shard (by trace id, as the OpenTelemetry Collector's
``loadbalancing`` exporter routes them): the merged graph equals the collectors' own APIs
combined."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_procs import CATALOG, PROMETHEUS, PYTHON, Proc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from procs import free_port

from dashboard import app as app_module
from dashboard.promsource import CatalogOwnership, PrometheusSource

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason=f"{PROMETHEUS} not installed (apt-get install prometheus; `make system-deps`)",
)

TRACES = 60
MS = 1_000_000
WINDOW_S = 120.0
SCRAPE_S = 1


class Shop:
    """One TracerProvider per service (service.name is a resource attribute), all recording
    into one in-memory exporter; the spans are sharded and sent afterwards."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.providers: dict[str, TracerProvider] = {}

    def tracer(self, service: str) -> trace.Tracer:
        if service not in self.providers:
            provider = TracerProvider(resource=Resource.create(
                {"service.name": service, "service.namespace": "shop"}))
            provider.add_span_processor(SimpleSpanProcessor(self.memory))
            self.providers[service] = provider
        return self.providers[service].get_tracer("conway-test")

    def call(self, parent: trace.Span, client: str, server: str, t0: int, dur_ms: int,
             failed: bool) -> trace.Span:
        """A CLIENT span in ``client`` and the SERVER span it causes in ``server``; returns the
        server span (still open) so it can call further."""
        ctx = trace.set_span_in_context(parent)
        c = self.tracer(client).start_span(
            f"call {server}", context=ctx, kind=SpanKind.CLIENT, start_time=t0,
            attributes={"peer.service": server})
        s = self.tracer(server).start_span(
            "handle", context=trace.set_span_in_context(c), kind=SpanKind.SERVER,
            start_time=t0 + MS)
        if failed:
            s.set_status(Status(StatusCode.ERROR, "injected"))
            c.set_status(Status(StatusCode.ERROR, "500"))
        self._pending.append((c, t0 + (dur_ms + 2) * MS))
        self._pending.append((s, t0 + (dur_ms + 1) * MS))
        return s

    def checkout(self, i: int, t0: int) -> None:
        """user -> frontend -> checkout -> {payment -> fraud-detection, shipping -> quote,
        orders (PostgreSQL)}; payment fails in every third trace."""
        self._pending: list[tuple[trace.Span, int]] = []
        root = self.tracer("frontend").start_span("POST /checkout", kind=SpanKind.SERVER,
                                                  start_time=t0)
        checkout = self.call(root, "frontend", "checkout", t0, 300, failed=False)
        pay_failed = i % 3 == 0
        payment = self.call(checkout, "checkout", "payment", t0 + 5 * MS, 150, pay_failed)
        if not pay_failed:
            self.call(payment, "payment", "fraud-detection", t0 + 10 * MS, 30, failed=False)
        shipping = self.call(checkout, "checkout", "shipping", t0 + 200 * MS, 60, failed=False)
        self.call(shipping, "shipping", "quote", t0 + 210 * MS, 20, failed=False)
        db = self.tracer("checkout").start_span(
            "INSERT orders", context=trace.set_span_in_context(checkout), kind=SpanKind.CLIENT,
            start_time=t0 + 280 * MS,
            attributes={"db.system": "postgresql", "db.namespace": "orders"})
        db.end(t0 + 290 * MS)
        for span, end in reversed(self._pending):
            span.end(end)
        root.end(t0 + 400 * MS)

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())

    def shutdown(self) -> None:
        for p in self.providers.values():
            p.shutdown()


def send_sharded(spans: list[ReadableSpan], collectors: list[str]) -> Counter[int]:
    """Each trace's spans to one collector, chosen by trace id; returns traces per shard."""
    shards: dict[int, list[ReadableSpan]] = {i: [] for i in range(len(collectors))}
    traces: dict[int, set[int]] = {i: set() for i in range(len(collectors))}
    for span in spans:
        assert span.context is not None
        shard = span.context.trace_id % len(collectors)
        shards[shard].append(span)
        traces[shard].add(span.context.trace_id)
    for shard, batch in shards.items():
        exporter = OTLPSpanExporter(endpoint=collectors[shard] + "/v1/traces", timeout=5)
        assert exporter.export(batch).name == "SUCCESS"
        exporter.shutdown()
    return Counter({shard: len(ids) for shard, ids in traces.items()})


def collector_edges(url: str) -> dict[tuple[str, str], tuple[int, int]]:
    graph = httpx.get(f"{url}/api/graph", params={"window": WINDOW_S}, timeout=5).json()
    return {(e["source"], e["target"]): (int(e["calls"]), int(e["errors"]))
            for e in graph["edges"]}


def combined(urls: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for url in urls:
        for key, (calls, errors) in collector_edges(url).items():
            c, e = out.get(key, (0, 0))
            out[key] = (c + calls, e + errors)
    return out


def prom_edges(graph: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(e["source"], e["target"]): (e["calls"], e["errors"]) for e in graph["edges"]}


def text(component: Any) -> str:
    """Every string inside a Dash component tree."""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(text(c) for c in component)
    children = getattr(component, "children", None)
    return text(children) if children is not None else ""


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached in {timeout_s} s; last: {last}")


@pytest.fixture
def stack(processes: list[Proc], tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """Two collectors and a Prometheus scraping both every second."""
    collectors = []
    for name in ("a", "b"):
        port = free_port()
        proc = Proc([PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port", str(port),
                     "--catalog", str(CATALOG)], tmp_path / f"collector-{name}.log")
        processes.append(proc)
        collectors.append((proc, f"http://127.0.0.1:{port}"))
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    targets = ", ".join(f"'{url.removeprefix('http://')}'" for _, url in collectors)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_S}s\n"
        f"  evaluation_interval: {SCRAPE_S}s\n"
        "scrape_configs:\n"
        "  - job_name: conway-collector\n"
        f"    static_configs: [{{targets: [{targets}]}}]\n"
    )
    prom = Proc([str(PROMETHEUS), f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                tmp_path / "prometheus.log")
    processes.append(prom)
    for proc, url in collectors:
        proc.wait_http(url + "/healthz")
    prom_url = f"http://127.0.0.1:{prom_port}"
    prom.wait_http(prom_url + "/-/ready")
    yield [url for _, url in collectors], prom_url


def test_prometheus_source_merges_two_collectors(stack: tuple[list[str], str]) -> None:
    collectors, prom_url = stack
    source = PrometheusSource(prom_url, CatalogOwnership(CATALOG), scrape_interval_s=SCRAPE_S)
    # Traffic in two halves, a scrape apart, as live traffic is: rate() and the latency
    # histograms' rate() need a counter that grows between scrapes.
    per_shard: Counter[int] = Counter()
    half = TRACES // 2
    for first, last in ((0, half), (half, TRACES)):
        shop = Shop()
        now = time.time_ns()
        for i in range(first, last):
            shop.checkout(i, now - (last - i) * 20 * MS)
        per_shard += send_sharded(shop.spans(), collectors)
        shop.shutdown()
        if first == 0:
            wait_for(lambda: sum(c for c, _ in prom_edges(source.graph(WINDOW_S)).values()),
                     10, "Prometheus scraping the first half")
    # Both collectors got a share: neither alone knows the whole graph.
    assert per_shard[0] > 0 and per_shard[1] > 0, per_shard

    failed = sum(1 for i in range(TRACES) if i % 3 == 0)
    expected = {
        ("user", "frontend"): (TRACES, 0),
        ("frontend", "checkout"): (TRACES, 0),
        ("checkout", "payment"): (TRACES, failed),
        ("payment", "fraud-detection"): (TRACES - failed, 0),
        ("checkout", "shipping"): (TRACES, 0),
        ("shipping", "quote"): (TRACES, 0),
        ("checkout", "orders"): (TRACES, 0),
    }
    # The collectors' own APIs, combined, have paired every call.
    want = wait_for(lambda: combined(collectors) == expected and combined(collectors), 10,
                    "both collectors paired every call")
    for url in collectors:
        alone = collector_edges(url)
        assert alone[("user", "frontend")][0] < TRACES

    with source:
        # Within a scrape interval or two of the collectors, Prometheus holds the same counts.
        graph = wait_for(lambda: (g := source.graph(WINDOW_S)) and prom_edges(g) == want and g,
                         10, "the Prometheus source matching the collectors")
        assert prom_edges(graph) == want

        nodes = {n["id"]: n for n in graph["nodes"]}
        edges = {(e["source"], e["target"]): e for e in graph["edges"]}
        # Kinds: what emits spans is a service; the database and `user` are virtual.
        assert nodes["orders"]["kind"] == "virtual" and nodes["user"]["kind"] == "virtual"
        assert nodes["checkout"]["kind"] == "service" and nodes["quote"]["kind"] == "service"
        assert edges[("checkout", "orders")]["connection_type"] == "database"
        # Ownership from the catalog, parsed in-process; `quote` is the catalog's orphan.
        assert nodes["payment"]["team"] == "payments"
        assert nodes["checkout"]["team"] == "orders"
        assert nodes["quote"]["team"] is None
        # Health from the error ratio: a third of payment's calls fail.
        assert nodes["payment"]["health"] == "failing"
        assert edges[("checkout", "payment")]["health"] == "failing"
        assert nodes["shipping"]["health"] == "healthy"
        assert nodes["payment"]["error_ratio"] == pytest.approx(failed / TRACES, abs=1e-3)
        # Latency from the merged histograms: payment serves in 151 ms, in Tempo's
        # (0.1 s, 0.2 s] bucket, so every quantile lies inside it.
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            assert 100 < edges[("checkout", "payment")][key] <= 200
        # No incidents from metrics, and the graph says why.
        assert source.incidents() == []
        assert any("incidents" in note for note in graph["notes"])

        teams = source.teams()
        assert "quote" in teams["orphans"]
        payments = source.team("payments", WINDOW_S)
        assert {(e["source"], e["target"]) for e in payments["edges_in"]} == {
            ("checkout", "payment")}
        teammap = source.teammap(WINDOW_S)
        assert any(e["source"] == "orders" and e["target"] == "payments"
                   for e in teammap["edges"])

        svc = source.service("payment", WINDOW_S)
        assert svc["owner"]["team"] == "payments"
        assert [c["service"] for c in svc["callers"]] == ["checkout"]
        assert [c["service"] for c in svc["callees"]] == ["fraud-detection"]
        assert svc["versions"] == [] and "versions" in svc["unavailable"]
        assert svc["series"], "the service page's rate series from rate() over time"

        with pytest.raises(Exception) as unknown:
            source.service("no-such-service", WINDOW_S)
        assert getattr(unknown.value, "status", None) == 404

    # The dashboard itself, source chosen by its settings: one refresh, the banner, a page.
    settings = app_module.Settings(source="prometheus", prometheus_url=prom_url,
                                   catalog=CATALOG, prometheus_scrape_interval_s=SCRAPE_S)
    app = app_module.create_app(settings)
    with app.server.app_context():
        # live, on the overview
        browser_state, key, bar, wire = app_module.refresh(0, None, None, None, "/")
        state = app_module.recent_states().get(key)  # what the banners then read
        assert state is not None and "graph" not in browser_state  # that goes as `wire`
        assert {n[0] for n in wire["nodes"]} == {n["id"] for n in state["graph"]["nodes"]}
        assert bar["at"] is None  # the time bar's share of it: live
        assert state["reachable"] is True and state["collector"] == prom_url
        shown = {n["id"]: n for n in state["graph"]["nodes"]}
        assert shown["payment"]["health"] == "failing" and shown["payment"]["team"] == "payments"
        assert state["incidents"] == []
        assert "no incidents / root cause from traces" in text(
            app_module.source_banner(settings))
        from dashboard.pages import service as service_page

        body, _figure = service_page.refresh_service(0, "payment")
        assert "not available from the Prometheus source" in text(body)


def test_dashboard_cli_checks_the_prometheus_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dashboard.__main__ import main, parse_args

    args = parse_args(["--source", "prometheus", "--prometheus-url", "http://prom:9090/",
                       "--catalog", str(CATALOG)])
    assert (args.source, args.prometheus_url, args.catalog) == (
        "prometheus", "http://prom:9090", CATALOG)
    with pytest.raises(SystemExit):
        parse_args(["--source", "prometheus", "--catalog", str(tmp_path / "missing.yaml")])
    assert "does not exist" in capsys.readouterr().err
    # An invalid catalog stops the dashboard at start, saying where it is wrong.
    bad = tmp_path / "catalog-info.yaml"
    bad.write_text("apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {}\n")
    assert main(["--source", "prometheus", "--catalog", str(bad), "--port", "1"]) == 2
    assert "the catalog is invalid" in capsys.readouterr().err
