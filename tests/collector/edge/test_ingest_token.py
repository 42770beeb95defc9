"""Access: an optional bearer token on both ingest paths (flag or environment, and the SDK's own
OTEL_EXPORTER_OTLP_HEADERS), a GET-only read API, loopback by default, and no endpoint that
reflects input as HTML."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from google.rpc.status_pb2 import Status
from live_collector import (
    PB,
    Collector,
    metric,
    pairs,
    sdk_call,
    sdk_provider,
    wait_for_calls,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.__main__ import parse_args

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def guarded() -> Iterator[str]:
    c = Collector("--ingest-token", TOKEN, "--pairing-ttl", "30")
    try:
        yield c.url
    finally:
        c.stop()


def unauthorized(url: str) -> float:
    return metric(url, "conway_requests_rejected_total", reason="unauthorized")


def zipkin_span(service: str) -> list[dict[str, object]]:
    return [{"traceId": "4" * 32, "id": "5" * 16, "kind": "SERVER",
             "timestamp": time.time_ns() // 1000, "duration": 10,
             "localEndpoint": {"serviceName": service}}]


def test_otlp_needs_the_token(guarded: str) -> None:
    url = guarded + "/v1/traces"
    before = unauthorized(guarded)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        r = httpx.post(url, content=pairs("tok-no", 1), headers={**PB, **headers})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer <token>" in Status.FromString(r.content).message
    # No token and an unsupported media type: still 401, nothing said about the body first.
    r = httpx.post(url, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 401
    assert "OTEL_EXPORTER_OTLP_HEADERS" in r.json()["message"]
    assert unauthorized(guarded) - before == 5
    r = httpx.post(url, content=pairs("tok-yes", 3),
                   headers={**PB, "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert wait_for_calls(guarded, "tok-yes-a", "tok-yes-b", 3) == 3
    assert wait_for_calls(guarded, "tok-no-a", "tok-no-b", 0) == 0


def test_zipkin_needs_the_token(guarded: str) -> None:
    url = guarded + "/api/v2/spans"
    r = httpx.post(url, json=zipkin_span("zk-denied"))
    assert r.status_code == 401 and "needs an ingest token" in r.json()["error"]
    r = httpx.post(url, json=zipkin_span("zk-denied"), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "wrong or malformed token" in r.json()["error"]
    r = httpx.post(url, json=zipkin_span("zk-allowed"),
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202
    assert wait_for_calls(guarded, "user", "zk-allowed", 1) == 1
    assert wait_for_calls(guarded, "user", "zk-denied", 0) == 0


def test_the_sdk_sends_the_token_from_its_environment(
        guarded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the header, the SDK's exports are refused (401 is not retried) and nothing counts.
    before = unauthorized(guarded)
    a, b = sdk_provider(guarded, "sdk-anon-a"), sdk_provider(guarded, "sdk-anon-b")
    try:
        sdk_call(a, b)
    finally:
        a.shutdown()
        b.shutdown()
    assert unauthorized(guarded) - before == 2
    # With OTEL_EXPORTER_OTLP_HEADERS, the way operators configure every OTel SDK.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {TOKEN}")

    def provider(service: str) -> TracerProvider:
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=guarded + "/v1/traces")))
        return p

    a, b = provider("sdk-auth-a"), provider("sdk-auth-b")
    try:
        for _ in range(5):
            sdk_call(a, b)
    finally:
        a.shutdown()
        b.shutdown()
    assert wait_for_calls(guarded, "sdk-auth-a", "sdk-auth-b", 5) == 5
    assert wait_for_calls(guarded, "sdk-anon-a", "sdk-anon-b", 0) == 0


def test_token_from_the_environment_variable() -> None:
    c = Collector(env={"CONWAY_INGEST_TOKEN": "from-env"})
    try:
        r = httpx.post(c.url + "/v1/traces", content=pairs("env", 1), headers=PB)
        assert r.status_code == 401
        r = httpx.post(c.url + "/v1/traces", content=pairs("env", 1),
                       headers={**PB, "Authorization": "Bearer from-env"})
        assert r.status_code == 200
    finally:
        c.stop()


def test_read_api_needs_no_token_and_is_get_only(guarded: str) -> None:
    for path in ("/api/graph", "/api/teams", "/api/teammap", "/api/incidents", "/metrics",
                 "/healthz"):
        assert httpx.get(guarded + path).status_code == 200, path
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            r = httpx.request(method, guarded + path, content=b"{}")
            assert r.status_code == 405, (method, path)
            assert r.headers["content-type"] == "application/json"
            assert "GET" in r.headers["allow"]
            assert f"method {method} is not allowed" in r.json()["error"]
    r = httpx.delete(guarded + "/api/services/anything")
    assert r.status_code == 405
    assert httpx.get(guarded + "/v1/traces").status_code == 405


def test_no_endpoint_reflects_input_as_html(guarded: str) -> None:
    evil = "<script>alert(1)</script>"
    for path in (f"/api/services/{evil}", f"/api/teams/{evil}", f"/{evil}",
                 f"/api/graph?window={evil}"):
        r = httpx.get(guarded + path)
        assert r.status_code in (400, 404), path
        assert r.headers["content-type"] == "application/json", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "html" not in r.headers["content-type"]
    r = httpx.get(guarded + f"/api/services/{evil}")
    assert evil in r.json()["error"]  # named back to the user, as JSON text only
    # Ingest errors too: an OTLP/JSON body naming a script comes back as JSON.
    r = httpx.post(guarded + "/v1/traces", content=f'{{"{evil}": 1}}'.encode(),
                   headers={"Content-Type": "application/json",
                            "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_binds_to_loopback_unless_told_otherwise() -> None:
    assert parse_args([]).host == "127.0.0.1"
    assert parse_args(["--host", "0.0.0.0", "--ingest-token", "t"]).host == "0.0.0.0"
