"""The demo shop one part per process, as docker-compose.yml runs it: ``serve`` (one service,
peers reached through the host template), ``control`` (faults pushed to each service's admin
endpoint) and ``load``; real processes on loopback with a small topology on free ports."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_procs import PYTHON, Proc
from procs import free_port

TOKEN = "s3cret"
INGEST = "ingest-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def topology(path: Path, front: int, pay: int) -> Path:
    path.write_text(
        "virtual:\n"
        "  orders: {db_system: postgresql, db_namespace: orders, latency_ms: 1}\n"
        "topics:\n"
        "  visits: {system: kafka}\n"
        "services:\n"
        f"  frontend:\n    port: {front}\n    routes:\n"
        "      - route: GET /\n"
        "        calls: [{to: payment, route: GET /pay, required: true, timeout_ms: 1000}]\n"
        "        publishes: [visits]\n"
        f"  payment:\n    port: {pay}\n    routes:\n"
        "      - route: GET /pay\n"
        "        calls: [{to: orders, operation: INSERT}]\n"
        "    consumes: [{topic: visits, max_batch: 5, poll_ms: 100}]\n"
    )
    return path


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout_s} s; last: {last!r}")


def test_serve_control_and_load_as_separate_processes(
    processes: list[Proc], tmp_path: Path
) -> None:
    front, pay, admin = free_port(), free_port(), free_port()
    topo = topology(tmp_path / "topology.yaml", front, pay)
    # "localhost" instead of 127.0.0.1: the template is what the services call.
    common = ["--topology", str(topo), "--peer-host-template", "localhost"]
    # The collector requires an ingest token; the services send it as the compose file does,
    # through OTEL_EXPORTER_OTLP_HEADERS, with the endpoint from OTEL_EXPORTER_OTLP_ENDPOINT.
    collector_url = f"http://127.0.0.1:{free_port()}"
    collector = Proc([PYTHON, "-m", "collector", "--host", "127.0.0.1", "--port",
                      collector_url.rsplit(":", 1)[1]], tmp_path / "collector.log",
                     env={"CONWAY_INGEST_TOKEN": INGEST})
    processes.append(collector)
    service_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
                   "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{INGEST}"}

    def serve(name: str) -> Proc:
        # The topics' broker is the control process's API, as the containers reach it.
        proc = Proc([PYTHON, "-m", "demo_services", "serve", name, "--host", "127.0.0.1",
                     "--broker", f"http://localhost:{admin}", *common],
                    tmp_path / f"{name}.log", env=service_env)
        processes.append(proc)
        return proc

    frontend, payment = serve("frontend"), serve("payment")
    control = Proc([PYTHON, "-m", "demo_services", "control", "--host", "127.0.0.1",
                    "--port", str(admin), f"--admin-token={TOKEN}", *common],
                   tmp_path / "control.log")
    processes.append(control)
    frontend.wait_http(f"http://127.0.0.1:{front}/healthz")
    payment.wait_http(f"http://127.0.0.1:{pay}/healthz")
    control.wait_http(f"http://127.0.0.1:{admin}/healthz")
    api = f"http://127.0.0.1:{admin}"

    collector.wait_http(collector_url + "/healthz")

    # The frontend reaches payment through the template: a whole call chain works, and its
    # spans reach the token-protected collector.
    assert httpx.get(f"http://127.0.0.1:{front}/").status_code == 200

    def edges() -> set[tuple[str, str]]:
        graph = httpx.get(f"{collector_url}/api/graph").json()
        return {(e["source"], e["target"]) for e in graph["edges"]}

    wait_for(lambda: {("frontend", "payment"), ("payment", "orders")} <= edges(), 10,
             "the services' spans paired in the collector")
    # The visit went through the control process's broker to payment's batch consumer.
    wait_for(lambda: {("frontend", "kafka: visits"), ("kafka: visits", "payment")} <= edges(),
             10, "the message published, consumed and paired through its link")
    topics = httpx.get(f"http://127.0.0.1:{admin}/topics").json()["topics"]
    assert topics[0]["groups"][0]["delivered"] >= 1
    refused = httpx.post(f"{collector_url}/v1/traces", content=b"",
                         headers={"Content-Type": "application/x-protobuf"})
    assert refused.status_code == 401, "spans without the token must be refused"

    def states() -> dict[str, str]:
        body = httpx.get(f"{api}/services").json()
        return {s["name"]: s["state"] for s in body["services"]}

    wait_for(lambda: states() == {"frontend": "up", "payment": "up"}, 10, "both probed up")
    services = {s["name"]: s for s in httpx.get(f"{api}/services").json()["services"]}
    assert services["payment"]["url"] == f"http://localhost:{pay}"

    # A fault goes to the service's own admin endpoint; its callers feel it.
    assert httpx.post(f"{api}/faults/payment", json={"error_rate": 1.0}).status_code == 401
    r = httpx.post(f"{api}/faults/payment", json={"error_rate": 1.0}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert httpx.get(f"http://127.0.0.1:{pay}/admin/faults").json()["fault"]["error_rate"] == 1.0
    assert httpx.get(f"http://127.0.0.1:{front}/").status_code == 502
    # A virtual dependency's fault goes to its callers.
    r = httpx.post(f"{api}/faults/orders", json={"latency_ms": 5}, headers=AUTH)
    assert r.status_code == 200, r.text
    virtual = httpx.get(f"http://127.0.0.1:{pay}/admin/faults").json()["virtual"]
    assert virtual["orders"]["latency_ms"] == 5

    # `down` is a container's business: refused, saying what to run instead.
    r = httpx.post(f"{api}/faults/payment", json={"down": True}, headers=AUTH)
    assert r.status_code == 400
    assert "docker compose stop payment" in r.json()["error"]

    # A restarted service (a container restart) gets its faults back from the control API.
    payment.stop()
    wait_for(lambda: states()["payment"] == "down", 10, "payment probed down")
    payment = serve("payment")
    payment.wait_http(f"http://127.0.0.1:{pay}/healthz")
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{pay}/admin/faults").json()["fault"]
             ["error_rate"] == 1.0, 10, "payment's fault pushed again after its restart")

    r = httpx.delete(f"{api}/faults", headers=AUTH)
    assert r.status_code == 200, r.text
    assert httpx.get(f"http://127.0.0.1:{front}/").status_code == 200

    # The load generator alone, against the frontend's URL.
    load = Proc([PYTHON, "-m", "demo_services", "load", "--frontend",
                 f"http://127.0.0.1:{front}", "--rate", "20"], tmp_path / "load.log")
    processes.append(load)

    def served() -> float:
        text = httpx.get(f"http://127.0.0.1:{front}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("http_server_requests_total{"))

    before = served()
    wait_for(lambda: served() > before + 5, 15, "the load reaching the frontend")
    load.popen.send_signal(signal.SIGTERM)
    assert load.popen.wait(timeout=15) == 0
    assert "journeys" in load.log()


@pytest.mark.parametrize("template", ["{svc}", "{service}:80", "http://{service}"])
def test_serve_rejects_a_bad_peer_template(template: str) -> None:
    out = subprocess.run([PYTHON, "-m", "demo_services", "serve", "frontend",
                          "--peer-host-template", template],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "peer host template" in out.stderr
