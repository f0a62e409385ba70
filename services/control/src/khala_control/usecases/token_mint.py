"""Sync tokens for the WebSocket gateway (DESIGN §7): scope, version gate, audit.

The mint path does no Postgres round trip in the steady state: the caller's
memberships come from the NOTIFY-invalidated cache, the signing key is held
in memory, and the audit entry of every mint and every refusal (except rate
limiting) goes through the buffered `AuditWriter` (see its guarantee).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from khala_common.topics import parse_topic
from khala_control.domain.errors import ControlError
from khala_control.domain.models import Principal
from khala_control.domain.scope import access_problem, compute_scope, scope_org_ids
from khala_control.domain.surfaces import SurfacePolicy
from khala_control.domain.tokens import sync_claims
from khala_control.domain.validation import MAX_CLIENT_VERSION, check_length
from khala_control.metrics import DENIALS, TOKENS_MINTED
from khala_control.storage.audit import AuditEntry
from khala_control.usecases.audit_writer import AuditWriter
from khala_control.usecases.caches import MembershipCache
from khala_control.usecases.limits import MINT, RateLimiter
from khala_control.usecases.signing import Signer


def check_surface(principal: Principal, surface: str) -> None:
    """Refuse (`surface_mismatch`) a sync token for another surface than the session's.

    The surface matrix is only a boundary if a session cannot pick a wider
    surface at mint: a `web` session asking for an `onyx` (or `desktop`) token
    is refused, whatever the requested topics.
    """
    if principal.surface and surface != principal.surface:
        raise ControlError(
            "surface_mismatch",
            f"this session signed in as {principal.surface!r}; it cannot mint a token for "
            f"{surface!r}",
            surface=surface,
            session_surface=principal.surface,
        )


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
        memberships: MembershipCache,
        signer: Signer,
        surfaces: SurfacePolicy,
        audit: AuditWriter,
        limiter: RateLimiter,
        *,
        issuer: str,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._memberships = memberships
        self._signer = signer
        self._surfaces = surfaces
        self._audit = audit
        self._limiter = limiter
        self._issuer = issuer
        self._ttl_s = ttl_s
        self._clock = clock

    async def mint(
        self, principal: Principal, topics: Sequence[str], surface: str, client_version: str
    ) -> MintedToken:
        """A sync token for `topics` (empty: everything the surface may read)."""
        self._limiter.check(MINT, principal.user_id)
        surface = surface or principal.surface
        try:
            client_version = check_length(
                "client_version", client_version, MAX_CLIENT_VERSION, required=False
            )
            readable = self._surfaces.readable(surface)
            check_surface(principal, surface)
            self._surfaces.check_client_version(surface, client_version)
            memberships = await self._memberships.get(principal.user_id)
            scope = compute_scope(
                topics, {m.org_id: m.role for m in memberships}, readable, surface
            )
        except ControlError as exc:
            await self._deny(principal, surface, exc)
            raise
        now = self._clock()
        jti = uuid.uuid4().hex
        claims = sync_claims(
            issuer=self._issuer,
            user_id=principal.user_id,
            session_id=principal.session_id,
            device_id=principal.device_id,
            surface=surface,
            scope=scope,
            now=int(now),
            ttl_s=self._ttl_s,
            jti=jti,
        )
        token, kid = await self._signer.sign(claims)
        await self._audit.submit(
            AuditEntry(
                "sync_token.minted",
                datetime.fromtimestamp(now, UTC),
                user_id=principal.user_id,
                session_id=principal.session_id,
                org_ids=scope_org_ids(scope),
                detail={"jti": jti, "kid": kid, "surface": surface, "scope": list(scope)},
            )
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
        memberships = await self._memberships.get(user_id)
        problem = access_problem(topic, {m.org_id: m.role for m in memberships}, classes, surface)
        return (False, f"forbidden_topic: {problem}") if problem else (True, "")

    async def _deny(self, principal: Principal, surface: str, exc: ControlError) -> None:
        DENIALS.labels(code=exc.code).inc()
        topic = exc.extra.get("topic")
        await self._audit.submit(
            AuditEntry(
                "sync_token.denied",
                datetime.fromtimestamp(self._clock(), UTC),
                user_id=principal.user_id,
                session_id=principal.session_id,
                org_ids=scope_org_ids([topic]) if isinstance(topic, str) else (),
                detail={"code": exc.code, "surface": surface, "message": exc.message, **exc.extra},
            )
        )
