"""Run the whole Conway demo locally: demo shop + load, collector, dashboard.

Started by ``make demo``. Every component is its own child process; Ctrl-C (SIGINT) or SIGTERM
stops them all and waits for each, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")  # Debian's; make system-deps installs it
DEMO_CONSOLE = "http://pages:9097"  # the page console in deploy/alertmanager-demo.yml


def alertmanager_config(console: str) -> str:
    """The demo's routing (deploy/alertmanager-demo.yml, as docker compose uses it) with the
    page console at ``console``."""
    text = (ROOT / "deploy" / "alertmanager-demo.yml").read_text()
    if DEMO_CONSOLE not in text:
        raise RuntimeError(f"deploy/alertmanager-demo.yml no longer sends to {DEMO_CONSOLE}")
    return text.replace(DEMO_CONSOLE, console)


def prometheus_config(topology: Path, base_port: int | None) -> str:
    """Prometheus scraping every demo service's /metrics (its mesh series) every 2 s."""
    sys.path.insert(0, str(ROOT))
    from collector.topology import service_ports

    ports = sorted(service_ports(topology).values())
    if base_port:  # as demo_services.topology's with_base_port shifts them
        ports = [port - ports[0] + base_port for port in ports]
    targets = ", ".join(f"'127.0.0.1:{port}'" for port in ports)
    return ("global:\n  scrape_interval: 2s\n"
            "scrape_configs:\n  - job_name: sidecars\n"
            f"    static_configs: [{{targets: [{targets}]}}]\n")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--collector-port", type=int, default=4318)
    p.add_argument("--dashboard-port", type=int, default=8050)
    p.add_argument("--admin-port", type=int, default=8100)
    p.add_argument("--base-port", type=int, default=None,
                   help="first demo-service port (default: the topology's, 8101..)")
    p.add_argument("--rate", type=float, default=10.0, help="user journeys per second")
    p.add_argument("--sample", type=float, default=None, metavar="P",
                   help="head sampling: the shop keeps a share P of traces (e.g. 0.1)")
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    p.add_argument("--alertmanager-port", type=int, default=9093,
                   help="the demo's Alertmanager (started when "
                        f"{ALERTMANAGER} is installed)")
    p.add_argument("--page-console-port", type=int, default=9097,
                   help="the console receiver that prints each page")
    p.add_argument("--mesh", choices=("istio", "linkerd"), default=None,
                   help="each service also reports, on its /metrics, the series a sidecar of "
                        "this mesh would; a Prometheus scrapes them and the collector reads it "
                        "(--mesh-prometheus), so the graph shows what only the mesh sees")
    p.add_argument("--mesh-only", action="append", default=None, metavar="SERVICE",
                   help="with --mesh: services that send no traces (default: quote), shown "
                        "as 'no traces' coverage gaps; repeatable")
    p.add_argument("--prometheus-port", type=int, default=9090,
                   help="the demo's Prometheus with --mesh")
    args = p.parse_args(argv)

    py = sys.executable
    # The fault admin API wants a token: yours from the environment, or a fresh one per run,
    # written where `python -m demo_services fault|clear|scenario` look for it.
    token = os.environ.get("CONWAY_ADMIN_TOKEN") or secrets.token_urlsafe(18)
    os.environ["CONWAY_ADMIN_TOKEN"] = token
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = data_dir / "admin-token"
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)
    token_file.write_text(token + "\n", encoding="utf-8")
    # Spans are accepted only with the ingest token; the services' OTLP exporters send it.
    ingest_token = os.environ.get("CONWAY_INGEST_TOKEN") or secrets.token_urlsafe(18)
    os.environ["CONWAY_INGEST_TOKEN"] = ingest_token
    os.environ["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer%20{ingest_token}"
    collector_url = f"http://127.0.0.1:{args.collector_port}"
    admin_url = f"http://127.0.0.1:{args.admin_port}"
    dashboard_url = f"http://127.0.0.1:{args.dashboard_port}"
    topology = ROOT / "catalog" / "topology.yaml"
    catalog = ROOT / "catalog" / "catalog-info.yaml"

    # Pages go through a real Alertmanager, routing by team, to a console receiver that
    # prints them, when Alertmanager is installed; else the incidents show on the dashboard.
    paging: list[str] = []
    pager_commands: list[tuple[str, list[str], str, float]] = []
    if ALERTMANAGER.exists():
        console = f"http://127.0.0.1:{args.page_console_port}"
        am_url = f"http://127.0.0.1:{args.alertmanager_port}"
        am_dir = data_dir / "alertmanager"
        am_dir.mkdir(exist_ok=True)
        (am_dir / "alertmanager.yml").write_text(alertmanager_config(console))
        pager_commands = [
            ("page console", [py, str(ROOT / "scripts" / "page_console.py"),
                              "--port", str(args.page_console_port)], console, 10.0),
            ("alertmanager", [str(ALERTMANAGER),
                              f"--config.file={am_dir / 'alertmanager.yml'}",
                              f"--storage.path={am_dir}",
                              f"--web.listen-address=127.0.0.1:{args.alertmanager_port}",
                              "--cluster.listen-address=", "--log.level=warn"],
             f"{am_url}/-/ready", 20.0),
        ]
        paging = ["--alertmanager", am_url, "--dashboard-url", dashboard_url]
    else:
        print(f"conway demo: {ALERTMANAGER} is not installed, so pages are not sent (make "
              f"system-deps installs it); incidents still show on the dashboard",
              file=sys.stderr)

    mesh_commands: list[tuple[str, list[str], str, float]] = []
    mesh_collector: list[str] = []
    mesh_shop: list[str] = []
    if args.mesh is not None:
        if not PROMETHEUS.exists():
            print(f"conway demo: --mesh needs {PROMETHEUS} (make system-deps installs it)",
                  file=sys.stderr)
            return 2
        prom_url = f"http://127.0.0.1:{args.prometheus_port}"
        prom_dir = data_dir / "prometheus"
        prom_dir.mkdir(exist_ok=True)
        (prom_dir / "prometheus.yml").write_text(prometheus_config(topology, args.base_port))
        mesh_commands = [("prometheus", [str(PROMETHEUS),
                                         f"--config.file={prom_dir / 'prometheus.yml'}",
                                         f"--storage.tsdb.path={prom_dir / 'tsdb'}",
                                         "--storage.tsdb.retention.time=2h",
                                         f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
                                         "--log.level=warn"], f"{prom_url}/-/ready", 30.0)]
        mesh_collector = ["--mesh-prometheus", prom_url, "--mesh-poll", "5",
                          "--mesh-window", "30"]
        mesh_shop = [f"--mesh={args.mesh}",
                     *(f"--untraced={s}" for s in (args.mesh_only or ["quote"]))]

    commands = [
        *pager_commands,
        *mesh_commands,
        ("collector", [py, "-m", "collector", "--port", str(args.collector_port),
                       "--catalog", str(catalog), "--topology", str(topology),
                       "--scrape-interval", "1", "--data-dir", args.data_dir,
                       *paging, *mesh_collector],
         f"{collector_url}/healthz", 20.0),
        ("demo shop", [py, "-m", "demo_services", "up", "--topology", str(topology),
                       "--collector", collector_url, "--admin-port", str(args.admin_port),
                       # The admin token reaches the shop through CONWAY_ADMIN_TOKEN (set
                       # above), never as an argument: a token may begin with "-", which
                       # argparse would read as an option (and argv shows in `ps`).
                       "--rate", str(args.rate), *mesh_shop,
                       *([f"--sample={args.sample}"] if args.sample is not None else []),
                       *([f"--base-port={args.base_port}"] if args.base_port else [])],
         f"{admin_url}/services", 30.0),
        ("dashboard", [py, "-m", "dashboard", "--collector", collector_url,
                       "--port", str(args.dashboard_port), "--demo-admin", admin_url],
         dashboard_url, 30.0),
    ]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(_signum: int = 0, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        for name, cmd, ready_url, timeout_s in commands:
            proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
            procs.append((name, proc))
            if not wait_ready(ready_url, proc, timeout_s) and not stopping:
                print(f"conway demo: {name} did not become ready at {ready_url}", file=sys.stderr)
                status = 1
                return status
            if stopping:
                return status
        print(
            "\nConway demo is running:\n"
            f"  dashboard      {dashboard_url}\n"
            f"  collector API  {collector_url}/api/graph  (incidents: /api/incidents)\n"
            f"  demo control   {admin_url}/services  (admin token in {token_file})\n"
            + (f"  pages          through Alertmanager {paging[1]}, printed here "
               f"(PAGE → team)\n" if paging else "") +
            "  inject a fault: .venv/bin/python -m demo_services fault payment --error-rate 0.5\n"
            "  clear it:       .venv/bin/python -m demo_services clear\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"conway demo: {name} exited with {proc.returncode}", file=sys.stderr)
                    status = 1
                    return status
            time.sleep(0.5)
        return status
    finally:
        for _name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
