"""The collector's service-mesh source (``--mesh-prometheus``) against Debian's real Prometheus
scraping sidecar exposition in each mesh's exact format, joined with real traces.

Istio's names and labels: https://istio.io/latest/docs/reference/config/metrics/ (Istio
Standard Metrics: ``istio_requests_total``, ``istio_request_duration_milliseconds`` and the
labels ``reporter``, ``source_workload``, ``source_app``, ``destination_workload``,
``destination_app``, ``destination_service_name``, ``response_code``, ``response_flags``,
``source_canonical_service``, ...). Response flags are Envoy's ``%RESPONSE_FLAGS%``
(https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage).
Linkerd's: https://linkerd.io/2/reference/proxy-metrics/ (``response_total``,
``response_latency_ms`` with ``direction``, ``classification``, ``status_code``,
``dst_deployment``; ``deployment`` and ``namespace`` are the Kubernetes labels Linkerd's
Prometheus configuration adds from the pod, written here into the exposition).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_procs import PROMETHEUS, PYTHON, Proc
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from procs import free_port

from dashboard.promsource import CatalogOwnership, PrometheusSource

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason=f"{PROMETHEUS} not installed (apt-get install prometheus; `make system-deps`)",
)

SCRAPE_S = 1
# Envoy's default histogram buckets (ms) as Istio's sidecars export them.
ISTIO_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                 300000, 600000, 1800000, 3600000)
LINKERD_BUCKETS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000,
                   3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000)

CATALOG = """\
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: pricing-team}
spec: {type: team, profile: {displayName: Pricing}, children: []}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: storefront}
spec: {type: team, profile: {displayName: Storefront}, children: []}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: pricing-engine
  annotations: {backstage.io/kubernetes-id: legacy-pricing}
spec: {type: service, lifecycle: production, owner: pricing-team}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: author-directory
  annotations: {backstage.io/kubernetes-id: authors}
spec: {type: service, lifecycle: production, owner: pricing-team}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: frontend}
spec: {type: service, lifecycle: production, owner: storefront}
"""


def _labels(d: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in d.items())


def istio_call(reporter: str, src: tuple[str, str], dst: tuple[str, str], code: str,
               flags: str = "-", service: str | None = None) -> dict[str, str]:
    """The labels Istio's standard metrics carry; ``src``/``dst`` are (workload, app)."""
    s_wl, s_app = src
    d_wl, d_app = dst
    svc = service or d_app
    return {
        "reporter": reporter, "source_workload": s_wl, "source_workload_namespace":
        "shop" if s_wl != "unknown" else "unknown", "source_principal": "unknown",
        "source_app": s_app, "source_version": "v1" if s_wl != "unknown" else "unknown",
        "source_canonical_service": s_app, "source_canonical_revision": "v1",
        "source_cluster": "Kubernetes", "destination_workload": d_wl,
        "destination_workload_namespace": "shop" if d_wl != "unknown" else "unknown",
        "destination_principal": "unknown", "destination_app": d_app,
        "destination_version": "v1" if d_wl != "unknown" else "unknown",
        "destination_service": f"{svc}.shop.svc.cluster.local",
        "destination_service_name": svc, "destination_service_namespace": "shop",
        "destination_canonical_service": d_app, "destination_canonical_revision": "v1",
        "destination_cluster": "Kubernetes", "request_protocol": "http",
        "response_code": code, "grpc_response_status": "", "response_flags": flags,
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
    }


FRONTEND = ("frontend-v1", "frontend")
CHECKOUT = ("checkout-v1", "checkout")
PRICING = ("legacy-pricing-v1", "legacy-pricing")
INVENTORY = ("unknown", "unknown")  # no pod left: only the service name is known
INGRESS = ("unknown", "unknown")

# (labels, calls per step, latency ms): the traffic of one scrape interval.
ISTIO_SERIES: list[tuple[dict[str, str], int, float]] = [
    # Ingress without a sidecar -> frontend: only the destination's view exists.
    (istio_call("destination", INGRESS, FRONTEND, "200"), 30, 40.0),
    # frontend -> checkout, both views: 5 of 100 fail as the client sees it, 4 as the server
    # does (one timed out in between). The source view must be used, counted once.
    (istio_call("source", FRONTEND, CHECKOUT, "200"), 95, 80.0),
    (istio_call("source", FRONTEND, CHECKOUT, "503"), 5, 80.0),
    (istio_call("destination", FRONTEND, CHECKOUT, "200"), 96, 70.0),
    (istio_call("destination", FRONTEND, CHECKOUT, "503"), 4, 70.0),
    # checkout -> legacy-pricing (sends no traces): 10 of 50 fail with code 0 and URX
    # (retry limit exceeded): an error only the response flags reveal.
    (istio_call("source", CHECKOUT, PRICING, "200"), 40, 30.0),
    (istio_call("source", CHECKOUT, PRICING, "0", "URX"), 10, 30.0),
    (istio_call("destination", CHECKOUT, PRICING, "200"), 40, 25.0),
    # checkout -> inventory: no healthy upstream (UH), 503 from the client's sidecar only.
    (istio_call("source", CHECKOUT, INVENTORY, "503", "UH", service="inventory"), 20, 0.3),
]


def istio_exposition(step: int) -> str:
    lines = ["# HELP istio_requests_total Total requests.", "# TYPE istio_requests_total counter"]
    for labels, per_step, _ in ISTIO_SERIES:
        lines.append(f"istio_requests_total{{{_labels(labels)}}} {per_step * step}")
    lines += ["# HELP istio_request_duration_milliseconds Request duration.",
              "# TYPE istio_request_duration_milliseconds histogram"]
    for labels, per_step, ms in ISTIO_SERIES:
        n = per_step * step
        for le in ISTIO_BUCKETS:
            lines.append(f"istio_request_duration_milliseconds_bucket"
                         f"{{{_labels({**labels, 'le': f'{le:g}'})}}} {n if ms <= le else 0}")
        lines.append(f"istio_request_duration_milliseconds_bucket"
                     f"{{{_labels({**labels, 'le': '+Inf'})}}} {n}")
        lines.append(f"istio_request_duration_milliseconds_sum{{{_labels(labels)}}} {n * ms}")
        lines.append(f"istio_request_duration_milliseconds_count{{{_labels(labels)}}} {n}")
    return "\n".join(lines) + "\n"


def linkerd_out(src: str, dst: str, code: str, classification: str) -> dict[str, str]:
    return {"deployment": src, "namespace": "books", "pod": f"{src}-5d9c-abcde",
            "direction": "outbound", "authority": f"{strip(dst)}.books.svc.cluster.local:7001",
            "dst_deployment": dst, "dst_namespace": "books", "dst_pod": f"{dst}-7f8d-xyz",
            "dst_service": strip(dst), "dst_serviceaccount": strip(dst), "tls": "true",
            "server_id": f"{strip(dst)}.books.serviceaccount.identity.linkerd.cluster.local",
            "status_code": code, "classification": classification}


def strip(deployment: str) -> str:
    return deployment.rsplit("-v", 1)[0]


LINKERD_SERIES: list[tuple[dict[str, str], int, float]] = [
    (linkerd_out("webapp", "books-v1", "200", "success"), 60, 15.0),
    (linkerd_out("books-v1", "authors-v2", "200", "success"), 30, 8.0),
    (linkerd_out("books-v1", "authors-v2", "500", "failure"), 10, 8.0),
]


def linkerd_exposition(step: int) -> str:
    lines = ["# HELP response_total Total count of HTTP responses.",
             "# TYPE response_total counter"]
    for labels, per_step, _ in LINKERD_SERIES:
        lines.append(f"response_total{{{_labels(labels)}}} {per_step * step}")
    lines += ["# HELP response_latency_ms Elapsed times between a request's headers being "
              "received and its response stream completing",
              "# TYPE response_latency_ms histogram"]
    for labels, per_step, ms in LINKERD_SERIES:
        base = {k: v for k, v in labels.items() if k != "classification"}
        n = per_step * step
        for le in LINKERD_BUCKETS:
            lines.append(f"response_latency_ms_bucket{{{_labels({**base, 'le': f'{le:g}'})}}} "
                         f"{n if ms <= le else 0}")
        lines.append(f"response_latency_ms_bucket{{{_labels({**base, 'le': '+Inf'})}}} {n}")
        lines.append(f"response_latency_ms_sum{{{_labels(base)}}} {n * ms}")
        lines.append(f"response_latency_ms_count{{{_labels(base)}}} {n}")
    return "\n".join(lines) + "\n"


class Exposition:
    """A directory served by ``python -m http.server`` (a real process), rewritten every
    scrape interval so the counters grow as a live sidecar's do."""

    def __init__(self, path: Path, render: Callable[[int], str]) -> None:
        self.path, self.render = path, render
        self.step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.render(self.step))
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_S):
            self.step += 1
            self.write()

    def __enter__(self) -> Exposition:
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def send_traces(url: str) -> None:
    """user -> frontend -> checkout, in real OTLP from the SDK: checkout's calls to
    legacy-pricing and inventory are not traced (only the mesh sees them)."""
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", timeout=5)
    providers = {s: TracerProvider(resource=Resource.create({"service.name": s}))
                 for s in ("frontend", "checkout")}
    for p in providers.values():
        p.add_span_processor(SimpleSpanProcessor(exporter))
    fe, co = (providers[s].get_tracer("t") for s in ("frontend", "checkout"))
    for _ in range(20):
        root = fe.start_span("GET /", kind=SpanKind.SERVER)
        client = fe.start_span("call checkout", context=set_span_in_context(root),
                               kind=SpanKind.CLIENT, attributes={"peer.service": "checkout"})
        server = co.start_span("POST /checkout", context=set_span_in_context(client),
                               kind=SpanKind.SERVER)
        server.end()
        client.end()
        root.end()
    for p in providers.values():
        p.shutdown()


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError) as exc:
            last = repr(exc)
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout_s} s; last: {last}")


def start_prometheus(processes: list[Proc], tmp_path: Path, metrics_file: str) -> str:
    """The exposition server and a Prometheus scraping it every second; its URL."""
    web_port, prom_port = free_port(), free_port()
    processes.append(Proc([PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(web_port),
                           "--directory", str(tmp_path / "www")], tmp_path / "www.log"))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_S}s\n"
        "scrape_configs:\n"
        "  - job_name: sidecars\n"
        f"    metrics_path: /{metrics_file}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{web_port}']}}]\n")
    prom = Proc([str(PROMETHEUS), f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                tmp_path / "prometheus.log")
    processes.append(prom)
    prom_url = f"http://127.0.0.1:{prom_port}"
    prom.wait_http(prom_url + "/-/ready")
    (tmp_path / "catalog-info.yaml").write_text(CATALOG)
    return prom_url


def start_stack(processes: list[Proc], tmp_path: Path, metrics_file: str) -> tuple[str, str]:
    """``start_prometheus`` and a collector polling that Prometheus every second; returns
    (collector URL, Prometheus URL)."""
    prom_url = start_prometheus(processes, tmp_path, metrics_file)
    catalog = tmp_path / "catalog-info.yaml"
    col_port = free_port()
    col = Proc([PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port", str(col_port),
                "--catalog", str(catalog), "--mesh-prometheus", prom_url, "--mesh-poll", "1",
                "--mesh-window", "20"], tmp_path / "collector.log")
    processes.append(col)
    url = f"http://127.0.0.1:{col_port}"
    col.wait_http(url + "/healthz")
    return url, prom_url


def graph(url: str) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    g = httpx.get(url + "/api/graph", params={"window": 60}, timeout=5).json()
    return ({n["id"]: n for n in g["nodes"]},
            {(e["source"], e["target"]): e for e in g["edges"]})


@pytest.fixture
def www(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    return tmp_path / "www"


def test_istio_mesh_joined_with_traces(processes: list[Proc], tmp_path: Path, www: Path,
                                       ) -> None:
    with Exposition(www / "istio.txt", istio_exposition):
        url, _ = start_stack(processes, tmp_path, "istio.txt")
        send_traces(url)

        def ready() -> Any:
            nodes, edges = graph(url)
            e = edges.get(("checkout", "legacy-pricing"))
            # Wait for a few scrapes' worth of growth on every series.
            return (nodes, edges) if e and e["mesh"]["calls"] >= 150 else None

        nodes, edges = wait_for(ready, 60, "the mesh view in /api/graph")

        # Dedup as Kiali: frontend -> checkout from the source reporter, counted once (the
        # same number of steps as the destination-only ingress edge: 100 vs 30 per step).
        fc = edges[("frontend", "checkout")]
        ingress = edges[("unknown", "frontend")]
        assert fc["mesh"]["reporter"] == "source"
        assert ingress["mesh"]["reporter"] == "destination"
        ratio = fc["mesh"]["calls"] / ingress["mesh"]["calls"]
        assert ratio == pytest.approx(100 / 30, rel=0.05), (fc["mesh"], ingress["mesh"])
        assert fc["mesh"]["error_ratio"] == pytest.approx(0.05, abs=0.005)
        # Seen by both: one edge, trace figures kept, the mesh's alongside.
        assert fc["traced"] is True
        assert fc["calls"] == 20 and fc["errors"] == 0
        assert 50 <= fc["mesh"]["p50_ms"] <= 100  # in Envoy's (50, 100] bucket
        # Mesh only: drawn distinctly; its errors come from the URX response flag.
        cp = edges[("checkout", "legacy-pricing")]
        assert cp["traced"] is False
        assert cp["error_ratio"] == pytest.approx(0.2, abs=0.01)
        assert cp["mesh"]["response_flags"].get("URX", 0) > 0
        assert cp["rate_rps"] > 0
        # The coverage gap: legacy-pricing sends no traces; frontend and checkout do.
        assert nodes["legacy-pricing"]["no_traces"] is True
        assert nodes["legacy-pricing"]["traced"] is False
        assert nodes["checkout"]["no_traces"] is False
        assert nodes["frontend"]["traced"] is True
        # Ownership by backstage.io/kubernetes-id (its app label), with where it came from;
        # frontend by name as before.
        assert nodes["legacy-pricing"]["team"] == "pricing-team"
        assert nodes["legacy-pricing"]["team_source"] == "catalog (backstage.io/kubernetes-id)"
        assert nodes["frontend"]["team_source"] == "catalog"

        # Down from UH: inventory's callers found no healthy upstream.
        def inventory_down() -> Any:
            nodes, _ = graph(url)
            inv = nodes["inventory"]
            return inv if inv["health"] == "down" and inv.get("mesh_down") else None

        inv = wait_for(inventory_down, 30, "inventory judged down")
        assert inv["mesh"]["response_flags"]["UH"] > 0
        assert nodes["legacy-pricing"]["health"] != "down"

        def incident() -> Any:
            listed = httpx.get(url + "/api/incidents", timeout=5).json()["incidents"]
            return [i for i in listed if i["root_cause"].get("service") == "inventory"]

        found = wait_for(incident, 30, "an incident for inventory")
        assert found[0]["confidence"] >= 0.8
        detail = httpx.get(f"{url}/api/incidents/{found[0]['id']}", timeout=5).json()
        assert "no healthy upstream" in str(detail) and "UH" in str(detail), detail

        # legacy-pricing's 20 % failures, with no traces to explain them: a metrics-only
        # candidate, with a lower confidence than the down verdict.
        def legacy() -> Any:
            listed = httpx.get(url + "/api/incidents", timeout=5).json()["incidents"]
            return [i for i in listed if i["root_cause"].get("service") == "legacy-pricing"]

        errors = wait_for(legacy, 30, "an incident for legacy-pricing")
        assert errors[0]["root_cause"]["kind"] == "errors"
        assert errors[0]["confidence"] < found[0]["confidence"]
        assert "sends no traces" in str(errors[0])

        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert "conway_mesh_polls_total" in metrics
        assert httpx.get(url + "/healthz", timeout=5).json()["status"] == "ok"


def test_linkerd_mesh(processes: list[Proc], tmp_path: Path, www: Path) -> None:
    with Exposition(www / "linkerd.txt", linkerd_exposition):
        url, _ = start_stack(processes, tmp_path, "linkerd.txt")

        def ready() -> Any:
            nodes, edges = graph(url)
            e = edges.get(("books", "authors"))
            return (nodes, edges) if e and e["mesh"]["calls"] >= 120 else None

        nodes, edges = wait_for(ready, 60, "the Linkerd view in /api/graph")
        ba = edges[("books", "authors")]
        assert ba["mesh"]["mesh"] == "linkerd"
        assert ba["error_ratio"] == pytest.approx(0.25, abs=0.01)  # classification="failure"
        assert 5 <= ba["p50_ms"] <= 10
        wb = edges[("webapp", "books")]
        assert wb["error_ratio"] == 0.0
        assert wb["mesh"]["calls"] / ba["mesh"]["calls"] == pytest.approx(60 / 40, rel=0.05)
        assert all(n["no_traces"] for k, n in nodes.items() if k in ("webapp", "books",
                                                                      "authors"))
        # authors-v2 -> app "authors" -> the Component annotated with that kubernetes-id.
        assert nodes["authors"]["mesh"]["workloads"] == ["authors-v2"]
        assert nodes["authors"]["team"] == "pricing-team"
        assert nodes["authors"]["team_source"] == "catalog (backstage.io/kubernetes-id)"


def test_mesh_prometheus_down_is_degraded_not_fatal(processes: list[Proc], tmp_path: Path,
                                                   ) -> None:
    port, dead = free_port(), free_port()
    col = Proc([PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port", str(port),
                "--mesh-prometheus", f"http://127.0.0.1:{dead}", "--mesh-poll", "1"],
               tmp_path / "collector.log")
    processes.append(col)
    url = f"http://127.0.0.1:{port}"
    col.wait_http(url + "/healthz")

    def degraded() -> Any:
        body = httpx.get(url + "/healthz", timeout=5).json()
        return body if body["status"] == "degraded" else None

    body = wait_for(degraded, 20, "/healthz degraded")
    assert "mesh Prometheus" in body["mesh_source"]["message"]
    assert str(dead) in body["mesh_source"]["error"]
    send_traces(url)  # ingest goes on
    nodes, _ = wait_for(lambda: graph(url)[0].get("checkout") and graph(url), 10, "ingest")
    metrics = httpx.get(url + "/metrics", timeout=5).text
    failures = [ln for ln in metrics.splitlines()
                if ln.startswith("conway_mesh_poll_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 1


def test_dashboard_prometheus_source_reads_the_mesh(processes: list[Proc], tmp_path: Path,
                                                    www: Path) -> None:
    """The dashboard's Prometheus source with --mesh-prometheus: no service-graph series at
    all (no collector), so everything the graph shows comes from the Istio sidecars."""
    with Exposition(www / "istio.txt", istio_exposition):
        prom_url = start_prometheus(processes, tmp_path, "istio.txt")
        ownership = CatalogOwnership(tmp_path / "catalog-info.yaml")
        with PrometheusSource(prom_url, ownership, scrape_interval_s=SCRAPE_S,
                              mesh_url=prom_url) as source:
            def ready() -> Any:
                g = source.graph(30.0)
                edges = {(e["source"], e["target"]): e for e in g["edges"]}
                e = edges.get(("checkout", "legacy-pricing"))
                return g if e and e["mesh"]["calls"] >= 150 else None

            g = wait_for(ready, 60, "the mesh in the Prometheus source's graph")
    nodes = {n["id"]: n for n in g["nodes"]}
    edges = {(e["source"], e["target"]): e for e in g["edges"]}
    assert edges[("frontend", "checkout")]["mesh"]["reporter"] == "source"
    assert edges[("checkout", "legacy-pricing")]["traced"] is False
    assert edges[("checkout", "legacy-pricing")]["error_ratio"] == pytest.approx(0.2, abs=0.01)
    assert nodes["legacy-pricing"]["no_traces"] is True
    assert nodes["legacy-pricing"]["team_source"] == "catalog (backstage.io/kubernetes-id)"
    assert nodes["inventory"]["health"] == "down"
    assert nodes["checkout"]["health"] != "down"


def test_a_bad_answer_from_the_mesh_prometheus_is_counted(processes: list[Proc],
                                                          tmp_path: Path, www: Path) -> None:
    """Something that is not Prometheus answers /api/v1/query (a static file server)."""
    (www / "api" / "v1").mkdir(parents=True)
    (www / "api" / "v1" / "query").write_text("<html>not prometheus</html>")
    web_port, port = free_port(), free_port()
    processes.append(Proc([PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(web_port),
                           "--directory", str(www)], tmp_path / "www.log"))
    col = Proc([PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port", str(port),
                "--mesh-prometheus", f"http://127.0.0.1:{web_port}", "--mesh-poll", "1"],
               tmp_path / "collector.log")
    processes.append(col)
    url = f"http://127.0.0.1:{port}"
    col.wait_http(url + "/healthz")

    def degraded() -> Any:
        body = httpx.get(url + "/healthz", timeout=5).json()
        return body if body["status"] == "degraded" else None

    body = wait_for(degraded, 20, "/healthz degraded")
    assert "not JSON" in body["mesh_source"]["error"]
    g = httpx.get(url + "/api/graph", timeout=5).json()
    assert g["nodes"] == [] and g["edges"] == []
