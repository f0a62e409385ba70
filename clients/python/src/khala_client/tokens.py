"""Sync tokens for the WebSocket lane, minted by control on demand."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from khala_client.api import KhalaApi


@dataclass(frozen=True)
class SyncToken:
    """A sync JWT and when it expires (epoch milliseconds; 0 = unknown)."""

    token: str
    expires_at_ms: int = 0

    def remaining_s(self, now_ms: float | None = None) -> float:
        """Seconds until expiry (infinite when unknown)."""
        if not self.expires_at_ms:
            return float("inf")
        now = time.time() * 1000 if now_ms is None else now_ms
        return (self.expires_at_ms - now) / 1000.0


class TokenSource(Protocol):
    """Mints a fresh sync token."""

    async def __call__(self) -> SyncToken:
        """A new token."""
        ...


class ApiTokenSource:
    """Mints through control's `POST /api/sync/token` with a signed-in `KhalaApi`.

    `topics` (a list, or a callable returning one) narrows the scope; None asks
    for everything the user's memberships and surface allow. A 401 refreshes
    the access token once (inside `KhalaApi`).
    """

    def __init__(
        self,
        api: KhalaApi,
        topics: Sequence[str] | Callable[[], Sequence[str]] | None = None,
        *,
        surface: str = "",
        client_version: str = "1.0.0",
    ) -> None:
        self.api = api
        self.topics = topics
        self.surface = surface
        self.client_version = client_version
        self.minted = 0

    async def __call__(self) -> SyncToken:
        """A new token from control."""
        topics = self.topics() if callable(self.topics) else self.topics
        data = await self.api.sync_token(
            list(topics) if topics else None,
            surface=self.surface,
            client_version=self.client_version,
        )
        self.minted += 1
        return SyncToken(str(data["token"]), int(data.get("expires_at_ms") or 0))


class StaticTokenSource:
    """Always the same token (tests, or a token minted elsewhere)."""

    def __init__(self, token: str, expires_at_ms: int = 0) -> None:
        self.token = SyncToken(token, expires_at_ms)

    async def __call__(self) -> SyncToken:
        """The fixed token."""
        return self.token
