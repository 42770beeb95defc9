"""docker-compose.yml and deploy/ checked offline: Debian's docker-compose validates the file
(plain, with profile `scale`, and with deploy/scale.env), Debian's promtool the Prometheus
configs, and the wiring between them is checked against catalog/topology.yaml: every demo
service has a container that binds 0.0.0.0, calls its peers by name and is scraped. No Docker
engine runs here; the files must still be right."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml
from deploy_procs import DOCKER_COMPOSE, PROMTOOL, ROOT

from collector.scraper import topology_targets
from demo_services.topology import load_topology

COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
TOPOLOGY = load_topology(ROOT / "catalog" / "topology.yaml")
SCALE_ENV = DEPLOY / "scale.env"

needs_compose = pytest.mark.skipif(
    not DOCKER_COMPOSE.exists(),
    reason=f"{DOCKER_COMPOSE} not installed (apt-get install docker-compose; `make system-deps`)",
)


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: a developer's own CONWAY_* variables must not change the result.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONWAY_", "COMPOSE_", "DOCKER_"))}
    return subprocess.run([str(DOCKER_COMPOSE), "-f", str(COMPOSE), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def resolved(*args: str) -> dict[str, Any]:
    out = compose(*args, "config")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert isinstance(doc, dict)
    return doc


@needs_compose
@pytest.mark.parametrize("args", [(), ("--profile", "scale"), ("--env-file", str(SCALE_ENV))],
                         ids=["default", "profile-scale", "scale-env"])
def test_compose_file_is_valid(args: tuple[str, ...]) -> None:
    out = compose(*args, "config", "-q")
    assert out.returncode == 0, f"docker-compose {' '.join(args)} config -q:\n{out.stderr}"


@needs_compose
def test_every_demo_service_has_its_own_container() -> None:
    services = resolved()["services"]
    for name, spec in TOPOLOGY.services.items():
        assert name in services, f"no container for demo service {name}"
        svc = services[name]
        assert svc["command"][:5] == ["python", "-m", "demo_services", "serve", name]
        assert svc["command"][svc["command"].index("--host") + 1] == "0.0.0.0"
        env = svc["environment"]
        assert env["CONWAY_PEER_HOST_TEMPLATE"] == "{service}"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
        assert env["OTEL_EXPORTER_OTLP_HEADERS"].startswith("Authorization=Bearer%20")
        # The health check asks the service itself, on its own port.
        assert f"http://127.0.0.1:{spec.port}/healthz" in svc["healthcheck"]["test"]
        assert svc["depends_on"]["collector"]["condition"] == "service_healthy"
    # The load starts once every service is healthy.
    load = services["load"]
    assert set(load["depends_on"]) == set(TOPOLOGY.services)
    assert {d["condition"] for d in load["depends_on"].values()} == {"service_healthy"}
    assert "http://frontend:8101" in load["command"]


@needs_compose
def test_collector_prometheus_and_dashboard_are_wired() -> None:
    services = resolved()["services"]
    collector = services["collector"]["command"]
    # The collector scrapes every service of the topology at its container name.
    topology = collector[collector.index("--topology") + 1]
    template = collector[collector.index("--scrape-host-template") + 1]
    assert topology_targets(ROOT / topology, template) == {
        name: f"http://{name}:{spec.port}/metrics" for name, spec in TOPOLOGY.services.items()}
    assert "healthcheck" in services["collector"]
    tokens = {services[s]["environment"]["CONWAY_INGEST_TOKEN"] for s in ("collector",)}
    headers = {services[n]["environment"]["OTEL_EXPORTER_OTLP_HEADERS"] for n in TOPOLOGY.services}
    assert headers == {f"Authorization=Bearer%20{t}" for t in tokens}
    dashboard = services["dashboard"]["command"]
    assert "http://collector:4318" in dashboard and "http://control:8100" in dashboard
    # Pages go through Alertmanager, routed as deploy/alertmanager-demo.yml says, to the
    # console container that prints them.
    assert collector[collector.index("--alertmanager") + 1] == "http://alertmanager:9093"
    am = services["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:v")
    assert "--config.file=/etc/conway/alertmanager-demo.yml" in am["command"]
    assert "http://pages:9097/page" in (DEPLOY / "alertmanager-demo.yml").read_text()
    assert services["pages"]["command"][:2] == ["python", "scripts/page_console.py"]
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:v")
    assert "--config.file=/etc/conway/prometheus.yml" in prom["command"]
    # Published ports stay on this machine.
    for svc in services.values():
        for port in svc.get("ports", []):
            assert str(port.get("host_ip", port) if isinstance(port, dict) else port).startswith(
                "127.0.0.1"), port


@needs_compose
def test_scale_env_routes_through_otelcol_to_two_replicas() -> None:
    services = resolved("--env-file", str(SCALE_ENV))["services"]
    for name in TOPOLOGY.services:
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
            "http://otelcol:4318")
    assert services["otelcol"]["image"].startswith("otel/opentelemetry-collector-contrib:0.")
    assert services["collector-b"]["command"] == services["collector"]["command"]
    assert "--config.file=/etc/conway/prometheus-scale.yml" in services["prometheus"]["command"]
    dash = services["dashboard-prometheus"]["command"]
    assert dash[dash.index("--source") + 1] == "prometheus"
    assert dash[dash.index("--prometheus-url") + 1] == "http://prometheus:9090"
    assert "--catalog" in dash
    # Both replicas page through the one Alertmanager; the merged view reads it back.
    assert dash[dash.index("--alertmanager") + 1] == "http://alertmanager:9093"
    profiles = {n: s.get("profiles", []) for n, s in services.items()}
    assert {n for n, p in profiles.items() if "scale" in p} == {
        "otelcol", "collector-b", "dashboard-prometheus"}


def _shop_targets(config: dict[str, Any]) -> dict[str, str]:
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    return {sc["labels"]["service"]: t for sc in jobs["shop"]["static_configs"]
            for t in sc["targets"]}


def _collector_targets(config: dict[str, Any]) -> list[str]:
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    return [t for sc in jobs["conway-collector"]["static_configs"] for t in sc["targets"]]


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-scale.yml"])
def test_prometheus_configs_scrape_every_service(name: str) -> None:
    config = yaml.safe_load((DEPLOY / name).read_text())
    assert _shop_targets(config) == {
        n: f"{n}:{spec.port}" for n, spec in TOPOLOGY.services.items()}
    expected = ["collector:4318"] + (["collector-b:4318"] if "scale" in name else [])
    assert _collector_targets(config) == expected


@pytest.mark.skipif(not PROMTOOL.exists(),
                    reason=f"{PROMTOOL} not installed (Debian's prometheus package ships it)")
def test_promtool_accepts_the_prometheus_configs() -> None:
    out = subprocess.run([str(PROMTOOL), "check", "config", str(DEPLOY / "prometheus.yml"),
                          str(DEPLOY / "prometheus-scale.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_otelcol_routes_by_trace_id_to_each_replica() -> None:
    config = yaml.safe_load((DEPLOY / "otelcol-scale.yaml").read_text())
    receivers, exporters = config["receivers"], config["exporters"]
    pipelines = config["service"]["pipelines"]
    # Services send OTLP/HTTP to the front door, which load-balances by trace id.
    assert receivers["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert pipelines["traces"] == {"receivers": ["otlp"], "exporters": ["loadbalancing"]}
    lb = exporters["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    assert "otlp" in lb["protocol"]
    backends = lb["resolver"]["static"]["hostnames"]
    # Each backend is a gRPC receiver here whose pipeline forwards to one Conway collector
    # over OTLP/HTTP with the ingest token.
    grpc = {r["protocols"]["grpc"]["endpoint"]: name for name, r in receivers.items()
            if "grpc" in (r.get("protocols") or {})}
    replicas = set()
    for backend in backends:
        receiver = grpc[backend]
        [pipeline] = [p for p in pipelines.values() if p["receivers"] == [receiver]]
        [exporter] = pipeline["exporters"]
        assert exporter.startswith("otlphttp/")
        exp = exporters[exporter]
        assert exp["headers"]["Authorization"] == "Bearer ${env:CONWAY_INGEST_TOKEN}"
        match = re.fullmatch(r"http://([a-z0-9-]+):4318", exp["endpoint"])
        assert match, exp["endpoint"]
        replicas.add(match.group(1))
    assert replicas == {"collector", "collector-b"}
    # Prometheus (scale) scrapes exactly those replicas.
    scale = yaml.safe_load((DEPLOY / "prometheus-scale.yml").read_text())
    assert {t.split(":")[0] for t in _collector_targets(scale)} == replicas


def test_dockerfile_copies_what_the_containers_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", dockerfile, flags=re.M)
               for src in line.split()[:-1]]
    assert "demo_services" in sources and "catalog" in sources
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        # Dropped when it or a folder above it is ignored, unless a `!` line brings it back.
        above = {"/".join(src.split("/")[:k]) for k in range(1, src.count("/") + 2)}
        assert not (above & ignored) or f"!{src}" in ignored, \
            f".dockerignore drops {src}, which the image needs"
    assert "deploy/healthcheck.py" in dockerfile
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
