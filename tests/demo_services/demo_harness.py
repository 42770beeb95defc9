"""Test harness for the demo shop: free ports, an in-test OTLP/HTTP receiver, and a running
``python -m demo_services up`` whose processes are always stopped and waited on."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from procs import free_port

from demo_services.topology import load_topology

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
SPAN_KIND_PRODUCER = 4
SPAN_KIND_CONSUMER = 5
STATUS_ERROR = 2
WAIT_S = 20.0
# Longer than the services' span export interval (demo_services.telemetry.SCHEDULE_DELAY_MS).
SETTLE_S = 0.6



def free_port_block(count: int) -> int:
    """A base port such that base..base+count-1 are all free (below the ephemeral range)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, 32_000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {count} free ports found")


@dataclass
class SpanRow:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    service: str
    resource: dict[str, Any]
    attrs: dict[str, Any]
    error: bool
    start_ns: int
    end_ns: int
    # Span links as (trace id, span id), hex.
    links: list[tuple[str, str]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    """A real HTTP server accepting OTLP/HTTP protobuf on POST /v1/traces."""

    def __init__(self) -> None:
        self.rows: list[SpanRow] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        rows = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rows.append(
                        SpanRow(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            service=str(resource.get("service.name")),
                            resource=resource,
                            attrs={a.key: _value(a.value) for a in s.attributes},
                            error=s.status.code == STATUS_ERROR,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            links=[(link.trace_id.hex(), link.span_id.hex())
                                   for link in s.links],
                        )
                    )
        with self.lock:
            self.rows.extend(rows)

    def where(self, keep: Callable[[SpanRow], bool]) -> list[SpanRow]:
        with self.lock:
            return [r for r in self.rows if keep(r)]

    def trace(self, trace_id: str) -> list[SpanRow]:
        with self.lock:
            return [r for r in self.rows if r.trace_id == trace_id]

    def wait_trace(
        self, trace_id: str, done: Callable[[list[SpanRow]], bool], timeout_s: float = WAIT_S
    ) -> list[SpanRow]:
        """Poll until ``done(spans of the trace)`` and no new span of it has arrived for
        ``SETTLE_S``; returns the spans either way. Each service exports on its own schedule,
        so the spans ``done`` looks for can arrive before others of the same trace (the
        root, which ends last, typically comes last): waiting for the trace to go quiet, as
        the collector does, keeps assertions off a half-received trace."""
        deadline = time.monotonic() + timeout_s
        seen, quiet_since = -1, time.monotonic()
        while True:
            spans = self.trace(trace_id)
            now = time.monotonic()
            if len(spans) != seen:
                seen, quiet_since = len(spans), now
            if (done(spans) and now - quiet_since >= SETTLE_S) or now > deadline:
                return spans
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def trace_id_of(response: httpx.Response) -> str:
    return response.headers["traceresponse"].split("-")[1]


def services_in(spans: Sequence[SpanRow]) -> set[str]:
    return {s.service for s in spans}


@dataclass
class Shop:
    """A running `up` process with its ports; stop() always waits on it."""

    proc: subprocess.Popen[bytes]
    base_port: int
    admin_port: int
    token: str | None
    log: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(trust_env=False,
                                                                      timeout=30.0))

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def url(self, service: str) -> str:
        for entry in self.services()["services"]:
            if entry["name"] == service:
                return str(entry["url"])
        raise KeyError(service)

    def services(self) -> dict[str, Any]:
        response = self.client.get(self.admin + "/services")
        response.raise_for_status()
        return dict(response.json())

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def fault(self, target: str, **update: Any) -> httpx.Response:
        return self.client.post(f"{self.admin}/faults/{target}", json=update,
                                headers=self.headers())

    def clear(self, target: str | None = None) -> httpx.Response:
        path = "/faults" if target is None else f"/faults/{target}"
        return self.client.delete(self.admin + path, headers=self.headers())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("CONWAY_ADMIN_TOKEN", None)
        if self.token:
            env["CONWAY_ADMIN_TOKEN"] = self.token
        return subprocess.run(
            [PYTHON, "-m", "demo_services", *args, "--admin", self.admin],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        return int(self.proc.returncode)


def shifted_topology(tmp: Path, base: int, topology: Path | None = None) -> Path:
    """A copy of the topology with every service port moved so the lowest is ``base``, as
    ``up --base-port`` moves them: the collector scrapes the shop where it really listens."""
    src = topology or REPO / "catalog" / "topology.yaml"
    ports = {spec.port: moved.port for spec, moved in zip(
        load_topology(src).services.values(),
        load_topology(src).with_base_port(base).services.values(), strict=True)}
    text = re.sub(r"(?m)^(\s+port:\s*)(\d+)\s*$",
                  lambda m: f"{m.group(1)}{ports[int(m.group(2))]}", src.read_text())
    out = tmp / "topology.yaml"
    out.write_text(text)
    return out


def start_shop(
    tmp: Path,
    collector: str,
    topology: Path | None = None,
    token: str | None = None,
    count: int = 12,
    extra: Sequence[str] = (),
    base: int | None = None,
) -> Shop:
    base = free_port_block(count) if base is None else base
    admin_port = free_port()
    log = tmp / "up.log"
    cmd = [PYTHON, "-m", "demo_services", "up", "--base-port", str(base), "--admin-port",
           str(admin_port), "--collector", collector, "--rate", "0", *extra]
    if topology is not None:
        cmd += ["--topology", str(topology)]
    if token:
        cmd.append(f"--admin-token={token}")  # `=`: a token may begin with "-"
    env = dict(os.environ)
    env.pop("CONWAY_ADMIN_TOKEN", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    shop = Shop(proc, base, admin_port, token, log)
    deadline = time.monotonic() + 60
    while "ready;" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            shop.stop()
            raise RuntimeError(f"`up` did not become ready:\n{log.read_text()}")
        time.sleep(0.1)
    return shop


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """True while the process exists, zombies included (a zombie was never waited on)."""
    return Path(f"/proc/{pid}").exists()
