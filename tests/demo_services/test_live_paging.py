"""Paging for real: the demo shop's twelve processes, a collector sending to a real
Alertmanager that routes by team, and a webhook receiver standing in for PagerDuty and chat.
A payment fault pages Payments through its route; Orders and Web (checkout and frontend, its
victims) are told with ``info`` alerts, never paged; ``clear`` resolves the page. The same
collector keeps ingesting and answering while the pager works."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alerting import (
    Receiver,
    needs_alertmanager,
    routing_config,
    start_alertmanager,
    stop_process,
    wait_until,
)
from demo_harness import Shop, free_port_block, shifted_topology, start_shop
from procs import REPO, free_port, start_collector, stop

TOKEN = "live-paging-token"
TEAMS = ("payments", "orders", "web", "discovery", "comms")


@pytest.fixture
def paged(tmp_path: Path) -> Iterator[tuple[str, Shop, Receiver, str]]:
    if not Path("/usr/bin/prometheus-alertmanager").exists():
        pytest.skip("prometheus-alertmanager is not installed (make system-deps installs it)")
    tmp = tmp_path
    rec = Receiver()
    am, am_url = start_alertmanager(tmp, routing_config(rec.url, TEAMS))
    # The HA pair's other member is down the whole time: the page still goes through the
    # one that is up, and the failures are counted, never in the way.
    dead = f"http://127.0.0.1:{free_port()}"
    base = free_port_block(12)
    proc, url = start_collector("--topology", str(shifted_topology(tmp, base)),
                                "--scrape-interval", "1",
                                "--catalog", str(REPO / "catalog" / "catalog-info.yaml"),
                                "--diagnosis", "incident_quiet_s=5",
                                "--alertmanager", am_url, "--alertmanager", dead,
                                "--dashboard-url", "http://127.0.0.1:8050")
    shop = None
    try:
        shop = start_shop(tmp, url, token=TOKEN, extra=("--rate", "10"), base=base)
        yield url, shop, rec, am_url
    finally:
        if shop is not None:
            shop.stop()
        stop(proc)
        stop_process(am)
        rec.close()


@needs_alertmanager
def test_a_fault_pages_its_team_through_alertmanager_and_tells_the_victims(
        paged: tuple[str, Shop, Receiver, str]) -> None:
    url, shop, rec, _ = paged
    time.sleep(20)  # a baseline
    quiet = {t: rec.alerts_at(f"/page/{t}") for t in TEAMS}
    assert all(v == [] for v in quiet.values()), quiet  # nobody paged for nothing
    t0 = time.monotonic()
    assert shop.fault("payment", error_rate=0.5).status_code == 200
    (page, *_) = wait_until("Payments paged", lambda: rec.alerts_at("/page/payments"))
    took = time.monotonic() - t0
    opened = min(i["started_at"] for i in httpx.get(url + "/api/incidents", timeout=5,
                                                     trust_env=False).json()["incidents"])
    after_open = rec.first_seen("/page/payments") - opened
    assert page["status"] == "firing"
    assert {k: page["labels"][k] for k in ("alertname", "service", "team", "severity")
            } == {"alertname": "ConwayRootCause", "service": "payment", "team": "payments",
                  "severity": "page"}
    ann = page["annotations"]
    assert ann["kind"] == "errors"
    assert ann["runbook_url"].startswith("https://") and ann["on_call"] and ann["channel"]
    assert ann["dashboard_url"] == "http://127.0.0.1:8050/services/payment"
    assert "failed at payment itself" in ann["description"]
    wait_until("victims told", lambda: {"checkout", "frontend"} <= {
        a["labels"]["service"] for a in rec.alerts_at("/chat")})
    told = rec.alerts_at("/chat")
    assert {(a["labels"]["service"], a["labels"]["team"]) for a in told} >= {
        ("checkout", "orders"), ("frontend", "web")}
    assert all(a["labels"]["severity"] == "info" and a["labels"]["root_cause"] == "payment"
               and a["labels"]["root_cause_team"] == "payments" for a in told)
    # The incident's history says who was paged, through what, and when.
    (inc,) = [i for i in httpx.get(url + "/api/incidents", timeout=5, trust_env=False).json()[
        "incidents"] if i["root_cause"]["service"] == "payment"]
    detail = httpx.get(url + f"/api/incidents/{inc['id']}", timeout=5, trust_env=False).json()
    paged = [e for e in detail["history"] if e["event"] == "paged"]
    assert len(paged) == 1 and paged[0]["summary"].startswith("paged payments through "), paged
    assert detail["graph"]["nodes"][0] == {**detail["graph"]["nodes"][0], "id": "payment",
                                           "role": "root"}
    up, down = httpx.get(url + "/api/paging", timeout=5, trust_env=False).json()["sinks"]
    assert up["sent"] >= 3 and up["failures"] == 0 and up["last_error"] is None
    assert down["sent"] == 0 and down["failures"] >= 1 and down["queued"] >= 3
    health = httpx.get(url + "/healthz", timeout=5, trust_env=False).json()
    assert health["status"] == "degraded"
    assert [e["sink"] for e in health["paging_errors"]] == [down["sink"]]
    metrics = httpx.get(url + "/metrics", timeout=5, trust_env=False).text
    assert f'conway_paging_send_failures_total{{kind="alertmanager",sink="{down["sink"]}"}}' \
        in metrics
    # Reads answer while the dead member is retried (printed, not asserted).
    t = time.monotonic()
    for _ in range(10):
        assert httpx.get(url + "/api/graph", timeout=5, trust_env=False).status_code == 200
    graph_ms = (time.monotonic() - t) * 100

    shop.clear()
    wait_until("the page resolved", lambda: any(
        a["status"] == "resolved" for a in rec.alerts_at("/page/payments")), timeout=60)
    woken = {t: [a["labels"]["service"] for a in rec.alerts_at(f"/page/{t}")]
             for t in TEAMS if t != "payments"}
    print(f"\nPayments paged {took:.1f} s after the fault, {after_open:.1f} s after the "
          f"incident opened (one Alertmanager of the pair "
          f"down); /api/graph {graph_ms:.0f} ms meanwhile; other teams' pages: {woken}")
    assert all(v == [] for v in woken.values()), woken  # no false page


class ShardingProxy:
    """Receives the shop's OTLP/HTTP spans and sends each trace's spans to one of several
    collectors, chosen by trace id, as the OpenTelemetry Collector's ``loadbalancing``
    exporter routes them."""

    def __init__(self, collectors: list[str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        client = httpx.Client(timeout=10, trust_env=False)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                req = ExportTraceServiceRequest.FromString(
                    self.rfile.read(int(self.headers.get("Content-Length", 0))))
                shards = [ExportTraceServiceRequest() for _ in collectors]
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            out = shards[int.from_bytes(span.trace_id, "big") % len(shards)]
                            if not out.resource_spans or \
                                    out.resource_spans[-1].resource != rs.resource:
                                added = out.resource_spans.add()
                                added.resource.CopyFrom(rs.resource)
                                added.scope_spans.add().scope.CopyFrom(ss.scope)
                            out.resource_spans[-1].scope_spans[-1].spans.append(span)
                for url, shard in zip(collectors, shards, strict=True):
                    if shard.resource_spans:
                        with lock:
                            client.post(url + "/v1/traces", content=shard.SerializeToString(),
                                        headers={"Content-Type": "application/x-protobuf"})
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.client = client

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.client.close()


@needs_alertmanager
def test_two_collectors_sharing_the_traces_make_one_page_and_the_prometheus_source_shows_it(
        tmp_path: Path) -> None:
    from dashboard.promsource import CatalogOwnership, PrometheusSource

    rec = Receiver()
    am, am_url = start_alertmanager(tmp_path, routing_config(rec.url, TEAMS))
    base = free_port_block(12)
    topology = shifted_topology(tmp_path, base)
    collectors = [start_collector("--topology", str(topology), "--scrape-interval", "1",
                                  "--catalog", str(REPO / "catalog" / "catalog-info.yaml"),
                                  "--alertmanager", am_url) for _ in range(2)]
    proxy = ShardingProxy([url for _, url in collectors])
    shop = None
    try:
        shop = start_shop(tmp_path, proxy.url, token=TOKEN, extra=("--rate", "10"), base=base)
        time.sleep(20)
        assert shop.fault("payment", error_rate=0.5).status_code == 200

        def both_opened() -> bool:
            return all(any(i["root_cause"]["service"] == "payment" for i in httpx.get(
                url + "/api/incidents", timeout=5, trust_env=False).json()["incidents"])
                for _, url in collectors)

        wait_until("both replicas opened an incident for payment", both_opened, timeout=40)
        ids = {i["id"] for _, url in collectors for i in httpx.get(
            url + "/api/incidents", timeout=5, trust_env=False).json()["incidents"]
            if i["root_cause"]["service"] == "payment"}
        assert len(ids) == 2  # each replica's own incident, with its own id
        wait_until("Payments paged", lambda: rec.alerts_at("/page/payments"))
        time.sleep(5)  # both replicas have sent (and re-sent on changes) by now
        notes = [n for n in rec.at("/page/payments")
                 if any(a["labels"]["service"] == "payment" and a["status"] == "firing"
                        for a in n["alerts"])]
        # One page for one root cause, not one per replica.
        assert len(notes) == 1, [[(a["status"], a["labels"], a["annotations"].get("incident"),
                                   a["startsAt"], a["endsAt"]) for a in n["alerts"]]
                                 for n in notes]
        # The merged view reads the incident back from Alertmanager.
        source = PrometheusSource("http://127.0.0.1:9", CatalogOwnership(
            REPO / "catalog" / "catalog-info.yaml"), alertmanager_url=am_url)
        try:
            listed = source.incidents()
        finally:
            source.close()
        (inc,) = [i for i in listed if i["root_cause"]["service"] == "payment"]
        others = [(i["root_cause"]["service"], i["root_cause"]["kind"]) for i in listed
                  if i is not inc]
        print(f"\nother incidents from the replicas (campaign's business): {others}")
        assert inc["root_cause"]["service"] == "payment" and inc["page"]["team"] == "payments"
        assert inc["id"] in ids and inc["page"]["runbook"].startswith("https://")
        assert {"checkout", "frontend"} <= {d["service"] for d in inc["impacted"]}
    finally:
        if shop is not None:
            shop.stop()
        proxy.close()
        for proc, _ in collectors:
            stop(proc)
        stop_process(am)
        rec.close()
