"""Command line of the demo shop: ``python -m demo_services
{up,fault,clear,scenario,serve,load,control}``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from demo_services.control_client import ControlClient, ControlError
from demo_services.control_client import describe_fault as _describe
from demo_services.defaults import (
    DEFAULT_ADMIN,
    DEFAULT_ADMIN_PORT,
    DEFAULT_COLLECTOR,
    HOST,
    PEER_HOST_ENV,
    TOKEN_ENV,
    check_peer_template,
)
from demo_services.faults import MAX_CPU_HOG, MAX_LATENCY_MS
from demo_services.scenarios import SCENARIOS, run_scenario
from demo_services.topology import TopologyError

DEFAULT_RATE = 3.0
DEFAULT_SCENARIO_S = 60.0


def _error_rate(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a share), got {text}")
    return value


def _latency(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= MAX_LATENCY_MS:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and {MAX_LATENCY_MS:g} milliseconds, got {text}"
        )
    return value


def _cpu_hog(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of threads, got {text!r}") from None
    if not 0 <= value <= MAX_CPU_HOG:
        raise argparse.ArgumentTypeError(
            f"must be between 0 (off) and {MAX_CPU_HOG} threads, got {value}")
    return value


def _rate(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no load) or more journeys/s, got {text}")
    return value


def _share(text: str) -> float:
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share of traces in (0, 1], got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {value}")
    return value


def _peer_template(text: str) -> str:
    try:
        return check_peer_template(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL; give one like http://frontend:8101")
    return text.rstrip("/")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _mesh_args(p: argparse.ArgumentParser) -> None:
    from demo_services.mesh import MESHES

    p.add_argument("--mesh", choices=MESHES,
                   help="also expose, on each service's /metrics, the series a sidecar of this "
                        "mesh would report for its calls (a stand-in for the sidecar; see "
                        "demo_services/mesh.py)")
    p.add_argument("--untraced", action="append", default=[], metavar="SERVICE",
                   help="this service sends no traces (nor trace context), as an "
                        "uninstrumented one would; repeatable. With --mesh it is a mesh-only "
                        "service")


def _set_mesh_env(args: argparse.Namespace) -> None:
    """--mesh / --untraced as environment: every service process inherits them."""
    from demo_services.mesh import MESH_ENV, UNTRACED_ENV

    if args.mesh:
        os.environ[MESH_ENV] = args.mesh
    if args.untraced:
        os.environ[UNTRACED_ENV] = ",".join(args.untraced)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo_services",
        description="Conway's demo shop: 12 microservices with traces, metrics and faults.",
        epilog="Example: `python -m demo_services up` in one terminal, then "
        "`python -m demo_services scenario payment-outage` in another.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", help="start every service, the control API and the load generator",
        description="Start every service of the topology as its own process, the demo control "
        "API and a load generator; Ctrl-C (or SIGTERM) stops everything.",
    )
    up.add_argument("--topology", type=Path, help="topology YAML (default: catalog/topology.yaml)")
    up.add_argument("--collector", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT",
                                                          DEFAULT_COLLECTOR),
                    help="OTLP/HTTP endpoint for traces (default: $OTEL_EXPORTER_OTLP_ENDPOINT "
                    f"or {DEFAULT_COLLECTOR})")
    up.add_argument("--admin-port", type=_port, default=DEFAULT_ADMIN_PORT,
                    help=f"port of the control API (default {DEFAULT_ADMIN_PORT})")
    up.add_argument("--admin-token", default=os.environ.get(TOKEN_ENV),
                    help=f"require this bearer token for changes (default: ${TOKEN_ENV})")
    _mesh_args(up)
    up.add_argument("--rate", type=_rate, default=DEFAULT_RATE,
                    help=f"user journeys per second against the frontend, 0 for none "
                    f"(default {DEFAULT_RATE:g})")
    up.add_argument("--sample", type=_share, default=None, metavar="P",
                    help="head sampling: the services keep a share P of traces (0 < P <= 1) "
                    "and record it in the tracestate (ot=th:...), as OpenTelemetry's "
                    "probability samplers do (default: keep all)")
    up.add_argument("--base-port", type=_port,
                    help="move the service ports so the first one is N (default: as in the "
                    "topology, 8101..)")

    def control_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--admin", default=DEFAULT_ADMIN,
                       help=f"control API URL (default {DEFAULT_ADMIN}); token from ${TOKEN_ENV}")

    fault = sub.add_parser(
        "fault", help="inject a fault into a service or a virtual dependency",
        description="Inject a fault. Options accumulate with the target's current fault; "
        "`clear` removes it. Targets: services, or the virtual dependencies orders and redis.",
    )
    fault.add_argument("target", metavar="SERVICE", help="e.g. payment, checkout, orders, redis")
    fault.add_argument("--error-rate", type=_error_rate, metavar="R",
                       help="share of requests that fail with 500 (0..1)")
    fault.add_argument("--latency-ms", type=_latency, metavar="MS", help="added latency")
    fault.add_argument("--cpu-hog", type=_cpu_hog, metavar="N",
                       help=f"noisy neighbour (services only): N threads burning CPU in the "
                       f"service's process, slowing every service on the host "
                       f"(0..{MAX_CPU_HOG}, 0 = off)")
    fault.add_argument("--down", action="store_true",
                       help="stop the process: callers get connection refused")
    fault.add_argument("--version", metavar="V",
                       help="bad deploy: the service reports service.version V and fails "
                       "(50%% of requests unless --error-rate is given)")
    control_args(fault)

    clear = sub.add_parser("clear", help="clear the faults of one target, or of all")
    clear.add_argument("target", metavar="SERVICE", nargs="?", help="default: every target")
    control_args(clear)

    scenario = sub.add_parser(
        "scenario", help="run a scripted partial failure and restore the shop afterwards",
        description="Scenarios: " + "; ".join(f"{s.name}: {s.summary}"
                                               for s in SCENARIOS.values()),
    )
    scenario.add_argument("name", choices=sorted(SCENARIOS), metavar="NAME",
                          help=f"one of {', '.join(sorted(SCENARIOS))}")
    scenario.add_argument("--duration", type=_rate, default=DEFAULT_SCENARIO_S, metavar="S",
                          help=f"seconds to hold the fault (default {DEFAULT_SCENARIO_S:g})")
    control_args(scenario)

    serve = sub.add_parser(
        "serve", help="run one service in the foreground (a container's command)",
        description="Run one service of the topology in the foreground until SIGINT/SIGTERM. "
        "In a container: --host 0.0.0.0 and --peer-host-template {service}, so it calls its "
        "peers at http://<service>:<port>. Faults: its own /admin/faults, or `control`.",
    )
    serve.add_argument("name", metavar="SERVICE")
    _mesh_args(serve)
    serve.add_argument("--topology", type=Path,
                       help="topology YAML (default: catalog/topology.yaml)")
    serve.add_argument("--base-port", type=_port)
    serve.add_argument("--host", default=HOST, help=f"address to bind (default {HOST})")
    serve.add_argument("--peer-host-template", type=_peer_template,
                       default=os.environ.get(PEER_HOST_ENV) or None,
                       help=f"host of a peer, {{service}} replaced by its name (default: "
                       f"${PEER_HOST_ENV}, else {HOST})")
    serve.add_argument("--collector",
                       default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", DEFAULT_COLLECTOR),
                       help="OTLP/HTTP endpoint for traces (default: $OTEL_EXPORTER_OTLP_ENDPOINT "
                       f"or {DEFAULT_COLLECTOR})")
    serve.add_argument("--broker", type=_http_url,
                       default=os.environ.get("CONWAY_BROKER_URL") or DEFAULT_ADMIN,
                       help="the message broker of the topics it publishes or consumes: the "
                       f"control API (default: $CONWAY_BROKER_URL, else {DEFAULT_ADMIN})")
    serve.add_argument("--faults", help="initial faults as JSON {target: fault}")
    serve.add_argument("--parent-pid", type=int, help="exit when this parent goes away")

    load = sub.add_parser(
        "load", help="run only the load generator against a frontend URL",
        description="Simulated users against a running frontend until SIGINT/SIGTERM.",
    )
    load.add_argument("--frontend", type=_http_url, default=f"http://{HOST}:8101",
                      help=f"the frontend's base URL (default http://{HOST}:8101)")
    load.add_argument("--rate", type=_rate, default=DEFAULT_RATE,
                      help=f"user journeys per second (default {DEFAULT_RATE:g})")

    control = sub.add_parser(
        "control", help="serve the control API for services running elsewhere (containers)",
        description="The control API of `up` for services that `serve` runs elsewhere: faults "
        "are pushed to each service's /admin/faults at http://<peer host>:<port>. `down` is "
        "refused (stop the container instead).",
    )
    control.add_argument("--topology", type=Path,
                         help="topology YAML (default: catalog/topology.yaml)")
    control.add_argument("--base-port", type=_port)
    control.add_argument("--host", default=HOST, help=f"address to bind (default {HOST})")
    control.add_argument("--port", type=_port, default=DEFAULT_ADMIN_PORT,
                         help=f"port to bind (default {DEFAULT_ADMIN_PORT})")
    control.add_argument("--admin-token", default=os.environ.get(TOKEN_ENV),
                         help=f"require this bearer token for changes (default: ${TOKEN_ENV})")
    control.add_argument("--peer-host-template", type=_peer_template,
                         default=os.environ.get(PEER_HOST_ENV) or None,
                         help=f"host of a service, {{service}} replaced by its name (default: "
                         f"${PEER_HOST_ENV}, else {HOST})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "up":
        from demo_services.telemetry import SAMPLE_ENV
        from demo_services.up import UpOptions, run_up

        if args.sample is not None:
            os.environ[SAMPLE_ENV] = repr(args.sample)  # every service process inherits it
        _set_mesh_env(args)

        return run_up(
            UpOptions(
                topology=args.topology,
                collector=args.collector,
                admin_port=args.admin_port,
                admin_token=args.admin_token,
                rate=args.rate,
                base_port=args.base_port,
            )
        )
    if args.command == "serve":
        from demo_services.messaging import BROKER_ENV
        from demo_services.runner import run_service

        _set_mesh_env(args)
        os.environ[BROKER_ENV] = args.broker  # read by the service (demo_services.messaging)
        return run_service(
            args.name, args.topology, args.base_port, args.collector, args.faults,
            args.parent_pid, os.environ.get(TOKEN_ENV), host=args.host,
            peer_host_template=args.peer_host_template,
        )
    if args.command == "load":
        from demo_services.containers import run_load

        return run_load(args.frontend, args.rate)
    if args.command == "control":
        from demo_services.containers import run_control

        return run_control(args.topology, args.base_port, args.host, args.port,
                           args.admin_token, args.peer_host_template)
    client = ControlClient(args.admin)
    if args.command == "fault":
        update: dict[str, Any] = {}
        if args.error_rate is not None:
            update["error_rate"] = args.error_rate
        if args.latency_ms is not None:
            update["latency_ms"] = args.latency_ms
        if args.cpu_hog is not None:
            update["cpu_hog"] = args.cpu_hog
        if args.down:
            update["down"] = True
        if args.version is not None:
            update["version"] = args.version
        if not update:
            parser.error("fault: nothing to inject; give --error-rate, --latency-ms, "
                         "--cpu-hog, --down or --version")
        state = client.fault(args.target, update)
        print(f"{args.target}: {_describe(state['fault'])}")
        return 0
    if args.command == "clear":
        client.clear(args.target)
        print(f"cleared {args.target or 'every fault'}")
        return 0
    if args.command == "scenario":
        return run_scenario(args.name, client, args.duration)
    parser.error(f"unknown command {args.command}")
    return 2
