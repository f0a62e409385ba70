"""Device sessions: sign-in, refresh rotation, access token checks, revocation.

Refresh tokens are opaque, single-use and stored only as sha256 hashes. A
refresh spends the presented token and issues a new one in one transaction
(the token row is locked, so two concurrent refreshes cannot both succeed).
Presenting a spent token is treated as theft: the whole session is revoked,
the revocation is committed with its outbox message, and the caller gets 401.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from khala_common.jwt_verify import JwksCache, TokenError, TokenVerifier
from khala_control.domain.errors import ControlError
from khala_control.domain.models import DeviceSession, Membership, Principal
from khala_control.domain.surfaces import SurfacePolicy
from khala_control.domain.tokens import ACCESS_AUDIENCE, access_claims
from khala_control.domain.validation import MAX_CLIENT_VERSION, MAX_DEVICE_ID, check_length
from khala_control.metrics import DENIALS, REVOCATIONS, SESSIONS_CREATED, TOKENS_MINTED
from khala_control.storage import audit, orgs, users
from khala_control.storage import sessions as store
from khala_control.usecases.identity import OidcVerifier
from khala_control.usecases.revocations import RevocationRelay, enqueue_revocation
from khala_control.usecases.signing import KeyRing


def hash_refresh_token(token: str) -> bytes:
    """The stored form of a refresh token."""
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token() -> str:
    """A fresh opaque refresh token (256 bits of randomness)."""
    return f"rt_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class IssuedSession:
    """What sign-in and refresh return."""

    access_token: str
    refresh_token: str
    session_id: str
    user_id: str
    expires_at: int


@dataclass(frozen=True)
class TokenSettings:
    """Issuer and lifetimes of the tokens sessions hand out."""

    issuer: str
    access_ttl_s: int
    refresh_ttl_s: int


class SessionService:
    """Everything about device sessions."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: KeyRing,
        identity: OidcVerifier,
        surfaces: SurfacePolicy,
        relay: RevocationRelay,
        tokens: TokenSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._identity = identity
        self._surfaces = surfaces
        self._relay = relay
        self._tokens = tokens
        self._clock = clock
        self._verifier = TokenVerifier(
            JwksCache(keyring.jwks, ttl_s=30.0, min_refetch_interval_s=1.0),
            issuer=tokens.issuer,
            audience=ACCESS_AUDIENCE,
            required=("exp", "iat", "nbf", "sub", "sid", "did", "jti"),
        )

    async def sign_in(
        self, *, id_token: str, device_id: str, surface: str, client_version: str
    ) -> IssuedSession:
        """Exchange an ID token for a new device session (creating the user if new)."""
        device_id = check_length("device_id", device_id, MAX_DEVICE_ID, required=True)
        client_version = check_length(
            "client_version", client_version, MAX_CLIENT_VERSION, required=False
        )
        self._surfaces.readable(surface)
        try:
            identity = await self._identity.verify(id_token)
        except ControlError as exc:
            DENIALS.labels(code=exc.code).inc()
            raise
        refresh_token = new_refresh_token()
        async with self._pool.acquire() as conn, conn.transaction():
            user, created = await users.upsert_user(
                conn,
                new_user_id=f"usr_{uuid.uuid4().hex}",
                issuer=identity.issuer,
                subject=identity.subject,
                email=identity.email,
                name=identity.name,
            )
            session = await store.insert_session(
                conn,
                session_id=f"ses_{uuid.uuid4().hex}",
                user_id=user.user_id,
                device_id=device_id,
                surface=surface,
                client_version=client_version,
            )
            await store.insert_refresh_token(
                conn, hash_refresh_token(refresh_token), session.session_id, self._refresh_expiry()
            )
            await audit.record(
                conn,
                "session.created",
                user_id=user.user_id,
                session_id=session.session_id,
                detail={
                    "device_id": device_id,
                    "surface": surface,
                    "client_version": client_version,
                    "issuer": identity.issuer,
                    "new_user": created,
                },
            )
        SESSIONS_CREATED.labels(surface=surface).inc()
        return await self._issue(session, refresh_token)

    async def refresh(self, refresh_token: str) -> IssuedSession:
        """Rotate a refresh token; a spent one revokes its session (401)."""
        token_hash = hash_refresh_token(refresh_token)
        new_token = new_refresh_token()
        failure: ControlError | None = None
        revoked = False
        async with self._pool.acquire() as conn, conn.transaction():
            row = await store.lock_refresh_token(conn, token_hash)
            if row is None:
                failure = ControlError("unauthorized", "refresh token is not recognised")
            elif not row.session.active:
                failure = ControlError("unauthorized", "session has been revoked")
            elif row.used_at is not None:
                revoked = bool(
                    await self._revoke(
                        conn, row.session.user_id, [row.session.session_id], "refresh_token_reuse"
                    )
                )
                await audit.record(
                    conn,
                    "refresh_token.reused",
                    user_id=row.session.user_id,
                    session_id=row.session.session_id,
                )
                failure = ControlError(
                    "unauthorized", "refresh token was already used; the session has been revoked"
                )
            elif row.expires_at <= datetime.fromtimestamp(self._clock(), UTC):
                failure = ControlError("token_expired", "refresh token has expired")
            else:
                await store.mark_refresh_token_used(conn, token_hash)
                await store.insert_refresh_token(
                    conn,
                    hash_refresh_token(new_token),
                    row.session.session_id,
                    self._refresh_expiry(),
                )
                await store.touch_session(conn, row.session.session_id)
        if revoked:
            self._relay.kick()
        if failure is not None:
            DENIALS.labels(code=failure.code).inc()
            raise failure
        assert row is not None
        return await self._issue(row.session, new_token)

    async def authenticate(self, access_token: str) -> Principal:
        """The caller of a verified access token whose session is live."""
        try:
            claims = await self._verifier.verify(access_token)
        except TokenError as exc:
            DENIALS.labels(code=exc.code).inc()
            raise ControlError(exc.code, exc.message) from None
        async with self._pool.acquire() as conn:
            session = await store.get_session(conn, str(claims["sid"]))
        if session is None or session.user_id != claims["sub"] or not session.active:
            DENIALS.labels(code="unauthorized").inc()
            raise ControlError("unauthorized", "session has been revoked")
        return Principal(session.user_id, session.session_id, session.device_id, session.surface)

    async def list_sessions(self, principal: Principal) -> list[DeviceSession]:
        """The caller's live sessions."""
        async with self._pool.acquire() as conn:
            return await store.live_sessions(conn, principal.user_id)

    async def revoke_session(self, principal: Principal, session_id: str, reason: str) -> bool:
        """Revoke one of the caller's sessions; False if it was already revoked."""
        async with self._pool.acquire() as conn, conn.transaction():
            session = await store.get_session(conn, session_id)
            if session is None or session.user_id != principal.user_id:
                raise ControlError("session_not_found", f"no session {session_id!r} of yours")
            revoked = await self._revoke(conn, principal.user_id, [session_id], reason)
        if revoked:
            self._relay.kick()
        return bool(revoked)

    async def revoke_all(self, principal: Principal) -> list[str]:
        """Revoke every live session of the caller (this one included)."""
        async with self._pool.acquire() as conn, conn.transaction():
            revoked = await self._revoke(conn, principal.user_id, None, "revoke_all")
        if revoked:
            self._relay.kick()
        return [session.session_id for session in revoked]

    async def introspect(self, session_id: str) -> tuple[DeviceSession | None, list[Membership]]:
        """The session (None if unknown) and its user's memberships."""
        async with self._pool.acquire() as conn:
            session = await store.get_session(conn, session_id)
            if session is None:
                return None, []
            return session, await orgs.memberships_of(conn, session.user_id)

    async def _revoke(
        self, conn: asyncpg.Connection, user_id: str, session_ids: list[str] | None, reason: str
    ) -> list[DeviceSession]:
        revoked = await store.revoke_sessions(conn, user_id, session_ids, reason)
        if not revoked:
            return revoked
        message_id = await enqueue_revocation(
            conn, revoked, user_id=user_id, reason=reason, now_ms=int(self._clock() * 1000)
        )
        for session in revoked:
            await audit.record(
                conn,
                "session.revoked",
                user_id=user_id,
                session_id=session.session_id,
                detail={"reason": reason, "message_id": message_id},
            )
        REVOCATIONS.labels(reason=reason).inc(len(revoked))
        return revoked

    async def _issue(self, session: DeviceSession, refresh_token: str) -> IssuedSession:
        now = int(self._clock())
        claims = access_claims(
            issuer=self._tokens.issuer,
            user_id=session.user_id,
            session_id=session.session_id,
            device_id=session.device_id,
            surface=session.surface,
            now=now,
            ttl_s=self._tokens.access_ttl_s,
            jti=uuid.uuid4().hex,
        )
        access_token, _ = await self._keyring.sign(claims)
        TOKENS_MINTED.labels(kind="access").inc()
        return IssuedSession(
            access_token, refresh_token, session.session_id, session.user_id, claims["exp"]
        )

    def _refresh_expiry(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC) + timedelta(
            seconds=self._tokens.refresh_ttl_s
        )
