"""Device sessions: sign-in, refresh rotation, access token checks, revocation.

Refresh tokens are opaque, single-use and stored only as sha256 hashes. A
refresh spends the presented token and issues a new one in one transaction
(the token row is locked, so two concurrent refreshes cannot both succeed).
Presenting a spent token is treated as theft: the whole session is revoked,
the revocation is committed with its outbox message, and the caller gets 401.

Revocations are committed together with their `khala.control` outbox message
and audit entries (see `revocations.py` for the delivery guarantee); an
access token of a revoked session is refused by the very next request,
because `authenticate` checks the session on every call: the revoking process
evicts it from its session cache after the commit, and every other process on
the Postgres NOTIFY the revocation sends (see `caches.py`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from khala_common.jwt_verify import TokenError
from khala_control.domain.errors import ControlError
from khala_control.domain.models import DeviceSession, Membership, Principal
from khala_control.domain.surfaces import SurfacePolicy
from khala_control.domain.tokens import access_claims
from khala_control.domain.validation import (
    MAX_CLIENT_VERSION,
    MAX_DEVICE_ID,
    check_length,
    storable,
)
from khala_control.metrics import DENIALS, REVOCATIONS, SESSIONS_CREATED, TOKENS_MINTED
from khala_control.storage import audit, orgs, users
from khala_control.storage import sessions as store
from khala_control.storage.audit import AuditEntry
from khala_control.usecases import revocations
from khala_control.usecases.access_tokens import AccessTokenVerifier
from khala_control.usecases.audit_writer import AuditWriter
from khala_control.usecases.caches import SessionCache
from khala_control.usecases.identity import OidcVerifier
from khala_control.usecases.limits import REFRESH, SIGN_IN, RateLimiter
from khala_control.usecases.revocations import RevocationRelay, enqueue_revocation
from khala_control.usecases.signing import Signer
from openagents.control.v1.revocation_pb2 import RevocationKind

# ListRevokedSessions answers at most this many (newest first): far more than
# the revocations of one token lifetime in any deployment Khala targets.
MAX_LISTED_REVOCATIONS = 100_000


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


@dataclass(frozen=True)
class SessionDeps:
    """Collaborators of the session service besides the pool."""

    signer: Signer
    identity: OidcVerifier
    surfaces: SurfacePolicy
    relay: RevocationRelay
    audit: AuditWriter
    limiter: RateLimiter
    live_sessions: SessionCache


class SessionService:
    """Everything about device sessions."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        deps: SessionDeps,
        tokens: TokenSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._deps = deps
        self._tokens = tokens
        self._clock = clock
        self._verifier = AccessTokenVerifier(deps.signer, tokens.issuer, clock=clock)

    async def sign_in(
        self, *, id_token: str, device_id: str, surface: str, client_version: str, client_ip: str
    ) -> IssuedSession:
        """Exchange an ID token for a new device session (creating the user if new)."""
        self._deps.limiter.check(SIGN_IN, client_ip)
        device_id = check_length("device_id", device_id, MAX_DEVICE_ID, required=True)
        client_version = check_length(
            "client_version", client_version, MAX_CLIENT_VERSION, required=False
        )
        self._deps.surfaces.readable(surface)
        try:
            identity = await self._deps.identity.verify(id_token)
        except ControlError as exc:
            await self._denied("session.denied", exc, client_ip=client_ip)
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
                self._entry(
                    "session.created",
                    user_id=user.user_id,
                    session_id=session.session_id,
                    client_ip=client_ip,
                    detail={
                        "device_id": device_id,
                        "surface": surface,
                        "client_version": client_version,
                        "issuer": identity.issuer,
                        "new_user": created,
                    },
                ),
            )
        SESSIONS_CREATED.labels(surface=surface).inc()
        return await self._issue(session, refresh_token)

    async def refresh(self, refresh_token: str, *, client_ip: str) -> IssuedSession:
        """Rotate a refresh token; a spent one revokes its session (401)."""
        self._deps.limiter.check(REFRESH, client_ip)
        token_hash = hash_refresh_token(refresh_token)
        new_token = new_refresh_token()
        failure: ControlError | None = None
        revoked = reused = False
        async with self._pool.acquire() as conn, conn.transaction():
            row = await store.lock_refresh_token(conn, token_hash)
            if row is None:
                failure = ControlError("unauthorized", "refresh token is not recognised")
            elif not row.session.active:
                failure = ControlError("unauthorized", "session has been revoked")
            elif row.used_at is not None:
                reused = True
                revoked = bool(
                    await self._revoke(
                        conn,
                        row.session.user_id,
                        "refresh_token_reuse",
                        revocations.SESSION,
                        session_ids=[row.session.session_id],
                    )
                )
                await audit.record(
                    conn,
                    self._entry(
                        "refresh_token.reused",
                        user_id=row.session.user_id,
                        session_id=row.session.session_id,
                        client_ip=client_ip,
                    ),
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
        if row is not None and revoked:
            self._revoked([row.session])
        if failure is not None and reused:
            DENIALS.labels(code=failure.code).inc()  # audited above as refresh_token.reused
            raise failure
        if failure is not None:
            owner = row.session if row is not None else None
            await self._denied(
                "refresh_token.denied",
                failure,
                client_ip=client_ip,
                user_id=owner.user_id if owner else None,
                session_id=owner.session_id if owner else None,
            )
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
        session = await self._deps.live_sessions.get(str(claims["sid"]))
        if session is None or session.user_id != claims["sub"] or not session.active:
            DENIALS.labels(code="unauthorized").inc()
            raise ControlError("unauthorized", "session has been revoked")
        return Principal(session.user_id, session.session_id, session.device_id, session.surface)

    async def list_sessions(self, principal: Principal) -> list[DeviceSession]:
        """The caller's live sessions."""
        async with self._pool.acquire() as conn:
            return await store.live_sessions(conn, principal.user_id)

    async def logout(self, principal: Principal) -> list[str]:
        """Revoke the caller's own session (`session.revoked`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            revoked = await self._revoke(
                conn,
                principal.user_id,
                "logout",
                revocations.SESSION,
                session_ids=[principal.session_id],
            )
        return self._revoked(revoked)

    async def revoke_device(self, principal: Principal, session_id: str) -> tuple[str, list[str]]:
        """Sign out the device of one of the caller's sessions (`device.revoked`).

        Revokes that session and every other live session of the caller on the
        same `device_id`; returns the device id and the sessions revoked now.
        Idempotent: once the named session is revoked, calling again revokes
        nothing, not even a newer session on the same device.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            session = await store.get_session(conn, session_id) if storable(session_id) else None
            if session is None or session.user_id != principal.user_id:
                raise ControlError("session_not_found", f"no session {session_id!r} of yours")
            if not session.active:
                # Already signed out: a later sign-in on the same device is left alone.
                return session.device_id, []
            revoked = await self._revoke(
                conn,
                principal.user_id,
                "revoked_by_user",
                revocations.DEVICE,
                device_id=session.device_id,
            )
        return session.device_id, self._revoked(revoked)

    async def revoke_all(self, principal: Principal) -> list[str]:
        """Revoke every live session of the caller, this one included (`user.revoked`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            revoked = await self._revoke(conn, principal.user_id, "revoke_all", revocations.USER)
        return self._revoked(revoked)

    async def introspect(self, session_id: str) -> tuple[DeviceSession | None, list[Membership]]:
        """The session (None if unknown) and its user's memberships, read from Postgres."""
        async with self._pool.acquire() as conn:
            session = await store.get_session(conn, session_id)
            if session is None:
                return None, []
            return session, await orgs.memberships_of(conn, session.user_id)

    async def recently_revoked(self, window_s: float) -> list[tuple[str, datetime]]:
        """`(session_id, revoked_at)` of every session revoked in the last `window_s`."""
        async with self._pool.acquire() as conn:
            return await store.revoked_since(conn, window_s, MAX_LISTED_REVOCATIONS)

    def _revoked(self, revoked: list[DeviceSession]) -> list[str]:
        for session in revoked:
            self._deps.live_sessions.invalidate(session.session_id)
        if revoked:
            self._deps.relay.kick()
        return [session.session_id for session in revoked]

    async def _revoke(
        self,
        conn: asyncpg.Connection,
        user_id: str,
        reason: str,
        kind: RevocationKind,
        *,
        session_ids: list[str] | None = None,
        device_id: str | None = None,
    ) -> list[DeviceSession]:
        revoked = await store.revoke_sessions(
            conn, user_id, reason, session_ids=session_ids, device_id=device_id
        )
        if not revoked:
            return revoked
        message_id = await enqueue_revocation(
            conn,
            revoked,
            kind=kind,
            user_id=user_id,
            reason=reason,
            now_ms=int(self._clock() * 1000),
        )
        routing_key = revocations.ROUTING_KEYS[kind]
        for session in revoked:
            await audit.record(
                conn,
                self._entry(
                    "session.revoked",
                    user_id=user_id,
                    session_id=session.session_id,
                    detail={
                        "reason": reason,
                        "device_id": session.device_id,
                        "message_id": message_id,
                        "routing_key": routing_key,
                    },
                ),
            )
        REVOCATIONS.labels(reason=reason).inc(len(revoked))
        return revoked

    async def _denied(
        self,
        action: str,
        exc: ControlError,
        *,
        client_ip: str,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        DENIALS.labels(code=exc.code).inc()
        await self._deps.audit.submit(
            self._entry(
                action,
                user_id=user_id,
                session_id=session_id,
                client_ip=client_ip,
                detail={"code": exc.code, "message": exc.message},
            )
        )

    def _entry(
        self,
        action: str,
        *,
        user_id: str | None,
        session_id: str | None,
        client_ip: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            action,
            datetime.fromtimestamp(self._clock(), UTC),
            user_id=user_id,
            session_id=session_id,
            client_ip=client_ip,
            detail=detail or {},
        )

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
        access_token, _ = await self._deps.signer.sign(claims)
        TOKENS_MINTED.labels(kind="access").inc()
        return IssuedSession(
            access_token, refresh_token, session.session_id, session.user_id, claims["exp"]
        )

    def _refresh_expiry(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC) + timedelta(
            seconds=self._tokens.refresh_ttl_s
        )
