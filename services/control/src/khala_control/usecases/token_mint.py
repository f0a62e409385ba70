"""Sync tokens for the WebSocket gateway (DESIGN §7): scope, version gate, audit.

Every mint and every refusal on policy grounds (forbidden topic, client too
old) writes the audit log.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from khala_common.topics import parse_topic
from khala_control.domain.errors import ControlError
from khala_control.domain.models import Principal
from khala_control.domain.scope import access_problem, compute_scope
from khala_control.domain.surfaces import SurfacePolicy
from khala_control.domain.tokens import sync_claims
from khala_control.domain.validation import MAX_CLIENT_VERSION, check_length
from khala_control.metrics import DENIALS, TOKENS_MINTED
from khala_control.storage import audit, orgs
from khala_control.usecases.signing import KeyRing

_AUDITED_DENIALS = ("forbidden_topic", "upgrade_required")


@dataclass(frozen=True)
class MintedToken:
    """A signed sync token and what it grants."""

    token: str
    kid: str
    scope: tuple[str, ...]
    expires_at: int


class SyncTokenMinter:
    """Mints sync tokens and answers topic access checks."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: KeyRing,
        surfaces: SurfacePolicy,
        *,
        issuer: str,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._surfaces = surfaces
        self._issuer = issuer
        self._ttl_s = ttl_s
        self._clock = clock

    async def mint(
        self, principal: Principal, topics: Sequence[str], surface: str, client_version: str
    ) -> MintedToken:
        """A sync token for `topics` (empty: everything the surface may read)."""
        surface = surface or principal.surface
        client_version = check_length(
            "client_version", client_version, MAX_CLIENT_VERSION, required=False
        )
        try:
            readable = self._surfaces.readable(surface)
            self._surfaces.check_client_version(surface, client_version)
            async with self._pool.acquire() as conn:
                memberships = await orgs.memberships_of(conn, principal.user_id)
            scope = compute_scope(
                topics, {m.org_id: m.role for m in memberships}, readable, surface
            )
        except ControlError as exc:
            await self._deny(principal, surface, exc)
            raise
        now = int(self._clock())
        jti = uuid.uuid4().hex
        claims = sync_claims(
            issuer=self._issuer,
            user_id=principal.user_id,
            session_id=principal.session_id,
            device_id=principal.device_id,
            surface=surface,
            scope=scope,
            now=now,
            ttl_s=self._ttl_s,
            jti=jti,
        )
        token, kid = await self._keyring.sign(claims)
        async with self._pool.acquire() as conn:
            await audit.record(
                conn,
                "sync_token.minted",
                user_id=principal.user_id,
                session_id=principal.session_id,
                detail={"jti": jti, "kid": kid, "surface": surface, "scope": list(scope)},
            )
        TOKENS_MINTED.labels(kind="sync").inc()
        return MintedToken(token, kid, scope, claims["exp"])

    async def check_access(self, user_id: str, surface: str, topic_name: str) -> tuple[bool, str]:
        """Whether the user may read `topic_name` on `surface`; else `"<code>: <why>"`."""
        classes = self._surfaces.matrix.get(surface)
        if classes is None:
            return False, f"bad_request: unknown surface {surface!r}"
        topic = parse_topic(topic_name)
        if topic is None:
            return False, f"invalid_topic: {topic_name!r} is not a valid Khala topic"
        async with self._pool.acquire() as conn:
            memberships = await orgs.memberships_of(conn, user_id)
        problem = access_problem(topic, {m.org_id: m.role for m in memberships}, classes, surface)
        return (False, f"forbidden_topic: {problem}") if problem else (True, "")

    async def _deny(self, principal: Principal, surface: str, exc: ControlError) -> None:
        DENIALS.labels(code=exc.code).inc()
        if exc.code not in _AUDITED_DENIALS:
            return
        async with self._pool.acquire() as conn:
            await audit.record(
                conn,
                "sync_token.denied",
                user_id=principal.user_id,
                session_id=principal.session_id,
                detail={"code": exc.code, "surface": surface, "message": exc.message, **exc.extra},
            )
