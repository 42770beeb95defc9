"""A small client of the demo control API, used by the ``fault``, ``clear`` and ``scenario``
commands. Failures raise ControlError with a message fit for a terminal."""

from __future__ import annotations

from typing import Any

import httpx

from demo_services.defaults import DEFAULT_ADMIN, admin_token

# Setting `down` or clearing it stops or starts a process, which takes a few seconds.
REQUEST_TIMEOUT_S = 60.0


class ControlError(RuntimeError):
    """The control API refused a request or could not be reached."""


class ControlClient:
    def __init__(self, admin: str = DEFAULT_ADMIN, token: str | None = None) -> None:
        self.admin = admin.rstrip("/")
        self.token = token if token is not None else admin_token()

    def services(self) -> dict[str, Any]:
        return self._request("GET", "/services")

    def fault(self, target: str, update: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"/faults/{target}", update)

    def clear(self, target: str | None = None) -> dict[str, Any]:
        return self._request("DELETE", "/faults" if target is None else f"/faults/{target}")

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, self.admin + path, json=body, headers=headers,
                timeout=REQUEST_TIMEOUT_S, trust_env=False,
            )
        except httpx.HTTPError as exc:
            raise ControlError(
                f"cannot reach the demo control API at {self.admin} ({type(exc).__name__}); "
                "is `python -m demo_services up` running? (--admin URL picks another address)"
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text}
        if response.status_code != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ControlError(f"{message or response.text} (HTTP {response.status_code})")
        return payload


def describe_fault(fault: dict[str, Any]) -> str:
    """One line for a fault: 'error_rate=0.5 latency_ms=200' or 'no fault'."""
    parts = []
    if fault.get("down"):
        parts.append("down")
    if fault.get("error_rate"):
        parts.append(f"error_rate={fault['error_rate']:g}")
    if fault.get("latency_ms"):
        parts.append(f"latency_ms={fault['latency_ms']:g}")
    if fault.get("version"):
        parts.append(f"version={fault['version']}")
    if fault.get("cpu_hog"):
        parts.append(f"cpu_hog={fault['cpu_hog']}")
    return " ".join(parts) or "no fault"
