"""The dashboard's only HTTP code: the collector's JSON API and the demo control API.

Both clients raise ``ApiError`` with a message a person can act on (what failed, where, what
to do); ``unreachable`` tells a dead or absent server from an answer that said no. A transport
can be injected (``httpx.MockTransport`` in tests of the client itself).
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import Any, Protocol, Self
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT_S = 2.0


class ApiError(Exception):
    """A request failed. ``status`` is the HTTP status, or None when nothing answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


def _message_of(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return str(body)[:300]


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: a client is made per callback, and building the
    context (loading the CA bundle) took 45-75 ms of each refresh."""
    return ssl.create_default_context()


class _JsonClient:
    def __init__(
        self,
        base_url: str,
        *,
        what: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._what = what
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, headers=headers, transport=transport,
            verify=tls_context(),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"{self._what} at {self.base_url} did not answer {method} {path} in time "
                f"({type(exc).__name__}); is it overloaded?"
            ) from exc
        except httpx.TransportError as exc:
            raise ApiError(
                f"{self._what} unreachable at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is it running, and is the URL right?"
            ) from exc
        if resp.status_code >= 400:
            raise ApiError(
                f"{self._what} answered {resp.status_code} to {method} {path}: "
                f"{_message_of(resp)}",
                status=resp.status_code,
            )
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(
                f"{self._what} at {self.base_url} sent a non-JSON answer to {method} {path}",
                status=resp.status_code,
            ) from exc


class Source(Protocol):
    """What the pages read: the collector's API (``CollectorClient``) or Prometheus'
    service-graph series (``dashboard.promsource.PrometheusSource``)."""

    def graph(self, window_s: float, at: float | None = None) -> dict[str, Any]: ...
    def history(self, window_s: float) -> dict[str, Any] | None: ...
    def incidents(self) -> list[dict[str, Any]]: ...
    def incident_list(self) -> list[dict[str, Any]]: ...
    def incident(self, incident_id: str) -> dict[str, Any]: ...
    def paging(self) -> dict[str, Any] | None: ...
    def teams(self) -> dict[str, Any]: ...
    def team(self, name: str, window_s: float) -> dict[str, Any]: ...
    def teammap(self, window_s: float) -> dict[str, Any]: ...
    def service(self, name: str, window_s: float) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


class CollectorClient(_JsonClient):
    """Reads the collector's JSON API (see DESIGN.md)."""

    # A refresh's reads may go out together (``state.fetch``): httpx's client is thread-safe
    # and each read is one GET.
    concurrent_reads = True

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, what="collector", timeout_s=timeout_s, transport=transport)

    def graph(self, window_s: float, at: float | None = None) -> dict[str, Any]:
        """The graph now, or as it was at ``at`` (epoch seconds; with its ``incidents`` open
        then and its ``history`` range)."""
        params: dict[str, float] = {"window": window_s}
        if at is not None:
            params["at"] = round(at, 3)
        return dict(self.request("GET", "/api/graph", params=params) or {})

    def history(self, window_s: float) -> dict[str, Any] | None:
        """The range ``graph(at=...)`` can show (``from``, ``to``, ``earliest_at``); None
        from a collector without time travel."""
        try:
            body = self.request("GET", "/api/history", params={"window": window_s})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        found = (body or {}).get("history") if isinstance(body, dict) else None
        return dict(found) if isinstance(found, dict) else None

    def incidents(self) -> list[dict[str, Any]]:
        body = self.request("GET", "/api/incidents", params={"status": "open"}) or {}
        return [i for i in body.get("incidents", []) if isinstance(i, dict)]

    def incident_list(self) -> list[dict[str, Any]]:
        """Open and resolved incidents, newest first."""
        body = self.request("GET", "/api/incidents") or {}
        return [i for i in body.get("incidents", []) if isinstance(i, dict)]

    def paging(self) -> dict[str, Any] | None:
        """The collector's pager: each sink's sent, failed, queued and last error; None when
        it pages nowhere (no ``--alertmanager`` or ``--page-webhook``)."""
        try:
            body = self.request("GET", "/api/paging")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body) if isinstance(body, dict) else None

    def incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its whole history and its stored graph."""
        return dict(self.request("GET", "/api/incidents/" + quote(incident_id, safe=""))
                    or {})

    def teams(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/teams") or {})

    def team(self, name: str, window_s: float) -> dict[str, Any]:
        path = "/api/teams/" + quote(name, safe="")
        return dict(self.request("GET", path, params={"window": window_s}) or {})

    def teammap(self, window_s: float) -> dict[str, Any]:
        return dict(self.request("GET", "/api/teammap", params={"window": window_s}) or {})

    def service(self, name: str, window_s: float) -> dict[str, Any]:
        path = "/api/services/" + quote(name, safe="")
        return dict(self.request("GET", path, params={"window": window_s}) or {})


class DemoClient(_JsonClient):
    """Drives the demo control API; mutating calls carry ``Authorization: Bearer <token>``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        super().__init__(
            base_url,
            what="demo control API",
            timeout_s=timeout_s,
            headers=headers,
            transport=transport,
        )

    def services(self) -> dict[str, Any]:
        return dict(self.request("GET", "/services") or {})

    def set_fault(self, target: str, fault: dict[str, Any]) -> Any:
        return self.request("POST", "/faults/" + quote(target, safe=""), json=fault)

    def clear(self, target: str) -> Any:
        return self.request("DELETE", "/faults/" + quote(target, safe=""))

    def clear_all(self) -> Any:
        return self.request("DELETE", "/faults")
