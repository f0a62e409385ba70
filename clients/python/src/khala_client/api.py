"""HTTP helpers for control (sign-in, sessions, orgs, sync tokens) and runtime
(runs, workers, events).

Access tokens are refreshed with the session's refresh token shortly before
they expire and once after a `401 token_expired`. Refresh tokens are single
use and rotate, so refreshes are serialized and every new session is handed
to `on_session` (the CLI persists it) before it is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

REFRESH_MARGIN_MS = 30_000


class ApiError(Exception):
    """A non-2xx answer: `status` and the `{"error": {"code", "message"}}` body.

    `status` 0 with code `unreachable` means no HTTP answer at all.
    """

    def __init__(self, status: int, code: str, message: str, body: Any) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
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
    expires_at_ms: int = 0
    device_id: str = ""
    surface: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's session file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        """Inverse of `to_dict` (unknown keys ignored)."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


class KhalaApi:
    """Calls control and runtime over HTTP with one aiohttp session."""

    def __init__(
        self,
        control_url: str,
        runtime_url: str,
        http: aiohttp.ClientSession,
        *,
        session: Session | None = None,
        on_session: Callable[[Session | None], None] | None = None,
    ) -> None:
        self.control_url = control_url.rstrip("/")
        self.runtime_url = runtime_url.rstrip("/")
        self.http = http
        self.session: Session | None = session
        self.on_session = on_session
        self._refreshing = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------

    async def _request(self, method: str, url: str, body: Any, auth: bool) -> Any:
        headers = {}
        if auth and self.session is not None:
            headers["Authorization"] = f"Bearer {self.session.access_token}"
        try:
            async with self.http.request(method, url, json=body, headers=headers) as response:
                text = await response.text()
                try:
                    data = await response.json(content_type=None) if text else None
                except ValueError:
                    data = text
                if response.status >= 400:
                    error = data.get("error", {}) if isinstance(data, dict) else {}
                    if not isinstance(error, dict):
                        error = {}
                    raise ApiError(
                        response.status,
                        str(error.get("code", "") or f"http_{response.status}"),
                        str(
                            error.get("message", "")
                            or (text[:200] if isinstance(data, str) else "")
                        ),
                        data,
                    )
                return data
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(
                0, "unreachable", f"cannot reach {url.split('/api/')[0]} ({exc})", None
            ) from exc

    async def _call(self, method: str, url: str, body: Any = None, *, auth: bool = True) -> Any:
        if auth and self._should_refresh():
            await self.refresh()
        try:
            return await self._request(method, url, body, auth)
        except ApiError as exc:
            if not (
                auth and exc.status == 401 and exc.code == "token_expired" and self._can_refresh()
            ):
                raise
        await self.refresh()
        return await self._request(method, url, body, auth)

    def _can_refresh(self) -> bool:
        return self.session is not None and bool(self.session.refresh_token)

    def _should_refresh(self) -> bool:
        session = self.session
        if session is None or not session.refresh_token or not session.expires_at_ms:
            return False
        return session.expires_at_ms - time.time() * 1000 < REFRESH_MARGIN_MS

    def _adopt(self, data: dict[str, Any], device_id: str, surface: str) -> Session:
        self.session = Session(
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            session_id=data["session_id"],
            user_id=data["user_id"],
            expires_at_ms=int(data.get("expires_at_ms") or 0),
            device_id=device_id,
            surface=surface,
        )
        if self.on_session is not None:
            self.on_session(self.session)
        return self.session

    # -- control: identity and sessions -----------------------------------

    async def sign_in_dev(
        self,
        email: str,
        name: str,
        *,
        device_id: str,
        surface: str = "desktop",
        client_version: str = "1.0.0",
    ) -> Session:
        """Sign in through control's dev identity provider."""
        issued = await self._call(
            "POST",
            f"{self.control_url}/api/dev/id-token",
            {"email": email, "name": name},
            auth=False,
        )
        return await self.sign_in(
            issued["id_token"], device_id=device_id, surface=surface, client_version=client_version
        )

    async def sign_in(
        self, id_token: str, *, device_id: str, surface: str, client_version: str
    ) -> Session:
        """Exchange an identity provider's ID token for a device session."""
        data = await self._call(
            "POST",
            f"{self.control_url}/api/auth/session",
            {
                "id_token": id_token,
                "device_id": device_id,
                "surface": surface,
                "client_version": client_version,
            },
            auth=False,
        )
        return self._adopt(data, device_id, surface)

    async def refresh(self) -> Session:
        """Rotate the refresh token for a new access token (serialized: tokens are single use)."""
        session = self.session
        if session is None or not session.refresh_token:
            raise ApiError(401, "unauthorized", "not signed in", None)
        async with self._refreshing:
            if self.session is not session:  # another caller refreshed meanwhile
                assert self.session is not None
                return self.session
            data = await self._request(
                "POST",
                f"{self.control_url}/api/auth/refresh",
                {"refresh_token": session.refresh_token},
                False,
            )
            return self._adopt(data, session.device_id, session.surface)

    async def access_token(self) -> str:
        """A currently valid access token (refreshed first when about to expire)."""
        if self._should_refresh():
            await self.refresh()
        if self.session is None:
            raise ApiError(401, "unauthorized", "not signed in", None)
        return self.session.access_token

    async def logout(self) -> Any:
        """Revoke this session and forget it."""
        result = await self._call("POST", f"{self.control_url}/api/auth/logout", {})
        self.session = None
        if self.on_session is not None:
            self.on_session(None)
        return result

    async def me(self) -> Any:
        """`{user, session, memberships}` of the signed-in user."""
        return await self._call("GET", f"{self.control_url}/api/me")

    async def sessions(self) -> Any:
        """The caller's live sessions."""
        return await self._call("GET", f"{self.control_url}/api/auth/sessions")

    async def create_org(self, org_id: str, name: str) -> Any:
        """Create an org; the caller becomes its owner."""
        return await self._call(
            "POST", f"{self.control_url}/api/orgs", {"org_id": org_id, "name": name}
        )

    async def invite(
        self, org_id: str, role: str, *, user_id: str | None = None, email: str | None = None
    ) -> Any:
        """Invite a user (by id) or an email address to an org (owners and admins):
        the pending invitation. Nobody becomes a member until they accept."""
        body: dict[str, Any] = {"role": role}
        if user_id is not None:
            body["user_id"] = user_id
        if email is not None:
            body["email"] = email
        return await self._call("POST", f"{self.control_url}/api/orgs/{org_id}/invitations", body)

    async def invitations(self) -> Any:
        """`{invitations}`: the caller's open invitations."""
        return await self._call("GET", f"{self.control_url}/api/invitations")

    async def accept_invitation(self, invitation_id: str) -> Any:
        """Accept an invitation: the caller becomes a member (`{user_id, org_id, name, role}`)."""
        return await self._call(
            "POST", f"{self.control_url}/api/invitations/{invitation_id}/accept", {}
        )

    async def decline_invitation(self, invitation_id: str) -> Any:
        """Decline an invitation."""
        return await self._call(
            "POST", f"{self.control_url}/api/invitations/{invitation_id}/decline", {}
        )

    async def sync_token(
        self, topics: list[str] | None = None, *, surface: str = "", client_version: str = "1.0.0"
    ) -> Any:
        """Mint a sync token for the WebSocket lane: `{token, expires_at, expires_at_ms, scope, kid}`.

        `topics` None or empty asks for everything the memberships and surface allow. The
        token's surface is always the session's (control refuses another with 403
        `surface_mismatch`); `surface` empty means the signed-in session's.
        """
        body: dict[str, Any] = {"topics": list(topics or []), "client_version": client_version}
        surface = surface or (self.session.surface if self.session is not None else "")
        if surface:
            body["surface"] = surface
        return await self._call("POST", f"{self.control_url}/api/sync/token", body)

    # -- runtime: runs ----------------------------------------------------

    async def create_run(self, org_id: str, run_id: str | None = None, title: str = "") -> Any:
        """Create a run (idempotent for the same id and title); returns its snapshot."""
        body: dict[str, Any] = {"org_id": org_id, "title": title}
        if run_id:
            body["run_id"] = run_id
        return await self._call("POST", f"{self.runtime_url}/api/v1/runs", body)

    async def append_events(
        self, run_id: str, events: list[dict[str, Any]], expected_seq: int | None = None
    ) -> Any:
        """Append events to a run; returns the receipt."""
        body: dict[str, Any] = {"events": events}
        if expected_seq is not None:
            body["expected_seq"] = expected_seq
        return await self._call(
            "POST", f"{self.runtime_url}/api/v1/runs/{_seg(run_id)}/events", body
        )

    async def get_run(self, run_id: str) -> Any:
        """A run's snapshot."""
        return await self._call("GET", f"{self.runtime_url}/api/v1/runs/{_seg(run_id)}")

    async def read_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> Any:
        """A page of a run's events after `after_seq`."""
        query = urlencode({"after_seq": after_seq, "limit": limit})
        return await self._call(
            "GET", f"{self.runtime_url}/api/v1/runs/{_seg(run_id)}/events?{query}"
        )

    async def list_runs(self, org_id: str, limit: int = 100, cursor: str | None = None) -> Any:
        """A page of an org's runs, newest first: `{runs, next_cursor}`."""
        params: dict[str, Any] = {"org_id": org_id, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        return await self._call("GET", f"{self.runtime_url}/api/v1/runs?{urlencode(params)}")

    # -- runtime: workers -------------------------------------------------

    async def create_worker(self, org_id: str, worker_id: str) -> Any:
        """Create or reattach a worker; returns its snapshot."""
        return await self._call(
            "POST", f"{self.runtime_url}/api/v1/workers", {"org_id": org_id, "worker_id": worker_id}
        )

    async def worker_events(
        self, worker_id: str, events: list[dict[str, Any]], expected_seq: int | None = None
    ) -> Any:
        """Ingest worker events; returns the receipt."""
        body: dict[str, Any] = {"events": events}
        if expected_seq is not None:
            body["expected_seq"] = expected_seq
        return await self._call(
            "POST", f"{self.runtime_url}/api/v1/workers/{_seg(worker_id)}/events", body
        )

    async def read_worker_events(
        self, worker_id: str, after_seq: int = 0, limit: int = 1000
    ) -> Any:
        """A page of a worker's events after `after_seq` (backfill beyond the gateway's retention)."""
        query = urlencode({"after_seq": after_seq, "limit": limit})
        return await self._call(
            "GET", f"{self.runtime_url}/api/v1/workers/{_seg(worker_id)}/events?{query}"
        )

    async def _worker_action(
        self,
        worker_id: str,
        action: str,
        payload: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> Any:
        body: dict[str, Any] = {}
        if payload:
            body["payload"] = payload
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        return await self._call(
            "POST", f"{self.runtime_url}/api/v1/workers/{_seg(worker_id)}/{action}", body
        )

    async def heartbeat(
        self,
        worker_id: str,
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Record a worker heartbeat; returns the receipt."""
        return await self._worker_action(worker_id, "heartbeat", payload, idempotency_key)

    async def stop_worker(
        self,
        worker_id: str,
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Stop a worker; returns the receipt."""
        return await self._worker_action(worker_id, "stop", payload, idempotency_key)

    async def resume_worker(
        self,
        worker_id: str,
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Resume a stopped worker; returns the receipt."""
        return await self._worker_action(worker_id, "resume", payload, idempotency_key)

    async def get_worker(self, worker_id: str) -> Any:
        """A worker's snapshot (heartbeat state and projection status)."""
        return await self._call("GET", f"{self.runtime_url}/api/v1/workers/{_seg(worker_id)}")

    async def list_workers(self, org_id: str, limit: int = 100, cursor: str | None = None) -> Any:
        """A page of an org's workers, newest first: `{workers, next_cursor}`."""
        params: dict[str, Any] = {"org_id": org_id, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        return await self._call("GET", f"{self.runtime_url}/api/v1/workers?{urlencode(params)}")


def _seg(value: str) -> str:
    return quote(value, safe="")
