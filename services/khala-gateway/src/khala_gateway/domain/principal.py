"""Who a socket belongs to and what it may read, from verified sync-token claims."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from khala_common.topics import scope_allows


class ClaimsError(ValueError):
    """Verified claims lack what a sync token must carry."""


@dataclass(frozen=True)
class Principal:
    """The user, session and device of a sync token, its scope and expiry."""

    user_id: str
    session_id: str
    device_id: str
    scope: tuple[str, ...]
    expires_at_ms: int
    surface: str = ""

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Build from verified claims; raises ClaimsError if `sub`, `exp` or `scope` is bad."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ClaimsError("token has no sub")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise ClaimsError("token has no exp")
        scope = claims.get("scope", [])
        if isinstance(scope, str):
            scope = scope.split()
        if not isinstance(scope, list) or not all(isinstance(p, str) for p in scope):
            raise ClaimsError("token scope must be a list of topic patterns")
        sid = claims.get("sid", "")
        did = claims.get("did", "")
        surface = claims.get("surface", "")
        return cls(
            user_id=sub,
            session_id=sid if isinstance(sid, str) else "",
            device_id=did if isinstance(did, str) else "",
            scope=tuple(scope),
            expires_at_ms=int(exp * 1000),
            surface=surface if isinstance(surface, str) else "",
        )

    def may_read(self, topic: str) -> bool:
        """Whether the token's scope admits `topic`."""
        return scope_allows(self.scope, topic)


def revocation_matches(
    principal: Principal,
    *,
    kind: int,
    session_ids: tuple[str, ...],
    user_id: str,
    device_id: str,
) -> bool:
    """Whether a revocation (openagents.control.v1.Revocation fields) covers `principal`.

    Listed session ids always match the token's `sid`. A user revocation (kind 3)
    also matches every token of `user_id`; a device revocation (kind 2) every
    token of `device_id` (of `user_id` when given).
    """
    if principal.session_id and principal.session_id in session_ids:
        return True
    if kind == 3 and user_id and principal.user_id == user_id:
        return True
    if kind == 2 and device_id and principal.device_id == device_id:
        return not user_id or principal.user_id == user_id
    return False
