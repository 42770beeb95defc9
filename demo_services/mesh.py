"""A stand-in for a service-mesh sidecar: the series Istio's or Linkerd's proxy would report.

With ``--mesh istio|linkerd`` (``CONWAY_MESH``) each demo service also exposes, on its own
``/metrics``, what the sidecar next to it would export for its inbound and outbound HTTP calls
(databases are not meshed calls). There is no proxy: the service records each call itself, and
names its caller in the ``x-envoy-peer-metadata-id`` request header (what Istio's metadata
exchange carries; a call without it, such as the load generator's, comes from ``unknown``).

Istio, named and labelled as https://istio.io/latest/docs/reference/config/metrics/ lists
them: ``istio_requests_total`` and ``istio_request_duration_milliseconds`` (Envoy's default
buckets) with ``reporter`` ("source" on the caller's side, "destination" on the server's),
``source_*`` / ``destination_*`` workload, namespace, app, version, canonical service and
revision, ``destination_service(_name|_namespace)``, ``request_protocol``, ``response_code``,
``response_flags`` (Envoy's ``%RESPONSE_FLAGS%``: ``UF`` for a refused connection, ``UT`` for
a timeout, ``-`` otherwise) and ``connection_security_policy``.

Linkerd, as https://linkerd.io/2/reference/proxy-metrics/ lists them: ``response_total`` and
``response_latency_ms`` with ``direction`` ("inbound" / "outbound"), ``authority``,
``status_code``, ``classification`` ("success" / "failure", a 5xx or no response failing),
``tls``, the ``dst_*`` labels of the outbound side, and the pod's Kubernetes labels that
Linkerd's Prometheus configuration adds (``namespace``, ``deployment``, ``pod``).

Workloads are named ``SERVICE-v1`` (a Deployment per version), their app label ``SERVICE``.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram

MESH_ENV = "CONWAY_MESH"
UNTRACED_ENV = "CONWAY_UNTRACED"  # comma-separated services that send no traces
MESHES = ("istio", "linkerd")
PEER_HEADER = "x-envoy-peer-metadata-id"
NAMESPACE = "shop"
UNKNOWN = "unknown"
ENVOY_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                    60000, 300000, 600000, 1800000, 3600000)
LINKERD_BUCKETS_MS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000,
                      3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000)
ISTIO_LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal",
    "source_app", "source_version", "source_canonical_service", "source_canonical_revision",
    "source_cluster", "destination_workload", "destination_workload_namespace",
    "destination_principal", "destination_app", "destination_version", "destination_service",
    "destination_service_name", "destination_service_namespace",
    "destination_canonical_service", "destination_canonical_revision", "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
LINKERD_COMMON = ("namespace", "deployment", "pod", "direction", "authority", "tls",
                  "dst_namespace", "dst_deployment", "dst_service", "status_code")


def mesh_from_env() -> str | None:
    value = os.environ.get(MESH_ENV, "").strip().lower()
    return value if value in MESHES else None


def untraced_from_env() -> set[str]:
    return {s.strip() for s in os.environ.get(UNTRACED_ENV, "").split(",") if s.strip()}


def workload(service: str) -> str:
    return f"{service}-v1"


class Sidecar:
    """Records one service's inbound and outbound calls as its mesh's sidecar would."""

    def __init__(self, mesh: str, service: str, registry: CollectorRegistry) -> None:
        if mesh not in MESHES:
            raise ValueError(f"mesh must be one of {MESHES}, got {mesh!r}")
        self.mesh = mesh
        self.service = service
        if mesh == "istio":
            self.requests = Counter("istio_requests", "Requests handled by the proxy.",
                                    ISTIO_LABELS, registry=registry)
            self.duration = Histogram("istio_request_duration_milliseconds",
                                      "Duration of requests, in milliseconds.", ISTIO_LABELS,
                                      buckets=ENVOY_BUCKETS_MS, registry=registry)
        else:
            self.requests = Counter("response", "Total count of HTTP responses.",
                                    (*LINKERD_COMMON, "classification"), registry=registry)
            self.duration = Histogram("response_latency_ms",
                                      "Elapsed times between a request's headers being "
                                      "received and its response stream completing",
                                      LINKERD_COMMON, buckets=LINKERD_BUCKETS_MS,
                                      registry=registry)

    def inbound(self, caller: str | None, status: int, ms: float) -> None:
        self._record("inbound", caller or UNKNOWN, self.service, str(status), "-", ms)

    def outbound(self, peer: str, status: int | None, error: str | None, ms: float) -> None:
        if status is not None:
            code, flags = str(status), "-"
        elif error == "timeout":
            code, flags = "504", "UT"  # upstream request timeout
        else:
            code, flags = "503", "UF"  # upstream connection failure
        self._record("outbound", self.service, peer, code, flags, ms)

    def _record(self, direction: str, src: str, dst: str, code: str, flags: str,
                ms: float) -> None:
        if self.mesh == "istio":
            labels = istio_labels("destination" if direction == "inbound" else "source",
                                  src, dst, code, flags)
            self.requests.labels(*labels).inc()
            self.duration.labels(*labels).observe(ms)
            return
        if direction == "inbound":
            common = (NAMESPACE, workload(self.service), f"{workload(self.service)}-0",
                      "inbound", f"{dst}.{NAMESPACE}.svc.cluster.local", "true", "", "", "",
                      code)
        else:
            common = (NAMESPACE, workload(self.service), f"{workload(self.service)}-0",
                      "outbound", f"{dst}.{NAMESPACE}.svc.cluster.local", "true", NAMESPACE,
                      workload(dst), dst, code if flags == "-" else "")
        failed = flags != "-" or code.startswith("5")
        self.requests.labels(*common, "failure" if failed else "success").inc()
        self.duration.labels(*common).observe(ms)


def istio_labels(reporter: str, src: str, dst: str, code: str, flags: str) -> tuple[str, ...]:
    known = src != UNKNOWN
    return (
        reporter, workload(src) if known else UNKNOWN, NAMESPACE if known else UNKNOWN,
        f"spiffe://cluster.local/ns/{NAMESPACE}/sa/{src}" if known else UNKNOWN,
        src, "v1" if known else UNKNOWN, src, "v1" if known else "latest", "Kubernetes",
        workload(dst), NAMESPACE, f"spiffe://cluster.local/ns/{NAMESPACE}/sa/{dst}", dst, "v1",
        f"{dst}.{NAMESPACE}.svc.cluster.local", dst, NAMESPACE, dst, "v1", "Kubernetes",
        "http", code, "", flags, "mutual_tls" if reporter == "destination" else UNKNOWN,
    )
