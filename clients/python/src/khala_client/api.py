"""HTTP helpers for control (sign-in, orgs, sync tokens) and runtime (runs, events)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


class ApiError(Exception):
    """A non-2xx answer: `status` and the `{"error": {"code", "message"}}` body."""

    def __init__(self, status: int, code: str, message: str, body: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


@dataclass
class Session:
    """A signed-in device session."""

    access_token: str
    refresh_token: str
    session_id: str
    user_id: str


class KhalaApi:
    """Calls control and runtime over HTTP with one aiohttp session."""

    def __init__(self, control_url: str, runtime_url: str, http: aiohttp.ClientSession) -> None:
        self.control_url = control_url.rstrip("/")
        self.runtime_url = runtime_url.rstrip("/")
        self.http = http
        self.session: Session | None = None

    async def _call(self, method: str, url: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {}
        if auth and self.session is not None:
            headers["Authorization"] = f"Bearer {self.session.access_token}"
        async with self.http.request(method, url, json=body, headers=headers) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                raise ApiError(response.status, error.get("code", ""), error.get("message", ""), data)
            return data

    async def sign_in_dev(
        self, email: str, name: str, *, device_id: str, surface: str = "desktop", client_version: str = "1.0.0"
    ) -> Session:
        """Sign in through control's dev identity provider."""
        issued = await self._call(
            "POST", f"{self.control_url}/api/dev/id-token", {"email": email, "name": name}, auth=False
        )
        return await self.sign_in(issued["id_token"], device_id=device_id, surface=surface, client_version=client_version)

    async def sign_in(self, id_token: str, *, device_id: str, surface: str, client_version: str) -> Session:
        """Exchange an identity provider's ID token for a device session."""
        data = await self._call(
            "POST",
            f"{self.control_url}/api/auth/session",
            {"id_token": id_token, "device_id": device_id, "surface": surface, "client_version": client_version},
            auth=False,
        )
        self.session = Session(data["access_token"], data["refresh_token"], data["session_id"], data["user_id"])
        return self.session

    async def create_org(self, org_id: str, name: str) -> Any:
        return await self._call("POST", f"{self.control_url}/api/orgs", {"org_id": org_id, "name": name})

    async def sync_token(self, topics: list[str], *, surface: str = "desktop", client_version: str = "1.0.0") -> Any:
        """Mint a sync token for the WebSocket lane: `{token, expires_at, scope, kid}`."""
        return await self._call(
            "POST",
            f"{self.control_url}/api/sync/token",
            {"topics": topics, "surface": surface, "client_version": client_version},
        )

    async def create_run(self, org_id: str, run_id: str | None = None, title: str = "") -> Any:
        body: dict[str, Any] = {"org_id": org_id, "title": title}
        if run_id:
            body["run_id"] = run_id
        return await self._call("POST", f"{self.runtime_url}/api/v1/runs", body)

    async def append_events(self, run_id: str, events: list[dict[str, Any]], expected_seq: int | None = None) -> Any:
        """Append events to a run; returns the receipt."""
        body: dict[str, Any] = {"events": events}
        if expected_seq is not None:
            body["expected_seq"] = expected_seq
        return await self._call("POST", f"{self.runtime_url}/api/v1/runs/{run_id}/events", body)

    async def get_run(self, run_id: str) -> Any:
        return await self._call("GET", f"{self.runtime_url}/api/v1/runs/{run_id}")

    async def read_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> Any:
        return await self._call(
            "GET", f"{self.runtime_url}/api/v1/runs/{run_id}/events?after_seq={after_seq}&limit={limit}"
        )
