"""Who may open and keep a socket: Hello, RefreshAuth, client-version minimums and
the per-user connection cap (protocol.md §3, §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from khala_common.jwt_verify import TokenError
from khala_gateway.adapters.token_verify import Authenticator
from khala_gateway.domain import codes
from khala_gateway.domain.limits import below_minimum
from khala_gateway.domain.principal import Principal
from khala_gateway.domain.revocations import RevokedSessions
from khala_gateway.settings import Settings
from openagents.sync.v1 import ws_pb2


@dataclass(frozen=True)
class Refusal:
    """Close the socket with `close_code` (after `error`, if any)."""

    close_code: int
    reason: str
    error: ws_pb2.Error | None = None

    @classmethod
    def unauthorized(cls, code: str, message: str) -> Refusal:
        """An `unauthorized` / `token_expired` refusal (close 4001)."""
        return cls(codes.CLOSE_UNAUTHORIZED, code, ws_pb2.Error(code=code, message=message))

    @classmethod
    def revoked(cls) -> Refusal:
        """The token's session was revoked (`reauth_required`, close 4009)."""
        return cls(
            codes.CLOSE_REAUTH_REQUIRED,
            "revoked",
            ws_pb2.Error(code=codes.REAUTH_REQUIRED, message="session revoked; sign in again"),
        )


class ConnectionCounts(Protocol):
    """How many authenticated sockets a user holds here (implemented by Hub)."""

    def user_connections(self, user_id: str) -> int: ...


class Admission:
    """Decides Hello and RefreshAuth."""

    def __init__(
        self,
        authenticator: Authenticator,
        hub: ConnectionCounts,
        settings: Settings,
        revoked: RevokedSessions,
    ) -> None:
        self._auth = authenticator
        self._hub = hub
        self._revoked = revoked
        self._min_versions = settings.min_versions
        self._max_per_user = settings.max_connections_per_user

    async def hello(self, hello: ws_pb2.Hello) -> Principal | Refusal:
        """The socket's principal, or why it is refused."""
        try:
            principal = await self._auth.authenticate(hello.token)
        except TokenError as exc:
            return Refusal.unauthorized(exc.code, exc.message)
        minimum = below_minimum(hello.client_version, principal.surface, self._min_versions)
        if minimum is not None:
            message = (
                f"client_version is below the minimum {minimum} for surface {principal.surface!r}"
            )
            return Refusal(
                codes.CLOSE_UPGRADE_REQUIRED,
                "upgrade required",
                ws_pb2.Error(code=codes.UPGRADE_REQUIRED, message=message),
            )
        if self._hub.user_connections(principal.user_id) >= self._max_per_user:
            return Refusal(codes.CLOSE_FORBIDDEN, "connection limit")
        # Last, with no await after it: a revocation arriving later finds the socket.
        if principal.session_id in self._revoked:
            return Refusal.revoked()
        return principal

    async def refresh(self, current: Principal, token: str) -> Principal | Refusal:
        """The refreshed principal (same user), or why the socket is closed."""
        try:
            principal = await self._auth.authenticate(token)
        except TokenError as exc:
            return Refusal.unauthorized(exc.code, exc.message)
        if principal.user_id != current.user_id:
            return Refusal.unauthorized(codes.UNAUTHORIZED, "the new token belongs to another user")
        if principal.session_id in self._revoked or current.session_id in self._revoked:
            return Refusal.revoked()
        return principal
