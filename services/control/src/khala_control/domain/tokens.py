"""Claims of the tokens control signs (docs/architecture.md "Tokens").

Pure builders: the caller supplies the clock reading and the random `jti`, so
the claim sets are deterministic and unit-testable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

ACCESS_AUDIENCE = "khala-api"
SYNC_AUDIENCE = "khala-gateway"


def access_claims(
    *,
    issuer: str,
    user_id: str,
    session_id: str,
    device_id: str,
    surface: str,
    now: int,
    ttl_s: int,
    jti: str,
) -> dict[str, Any]:
    """Claims of an access token (HTTP APIs of control and runtime)."""
    return {
        "iss": issuer,
        "aud": ACCESS_AUDIENCE,
        "sub": user_id,
        "sid": session_id,
        "did": device_id,
        "surface": surface,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": jti,
    }


def sync_claims(
    *,
    issuer: str,
    user_id: str,
    session_id: str,
    device_id: str,
    surface: str,
    scope: Sequence[str],
    now: int,
    ttl_s: int,
    jti: str,
) -> dict[str, Any]:
    """Claims of a sync token (WebSocket Hello / RefreshAuth, DESIGN §7)."""
    return {
        "iss": issuer,
        "aud": SYNC_AUDIENCE,
        "sub": user_id,
        "sid": session_id,
        "did": device_id,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": jti,
        "surface": surface,
        "scope": list(scope),
    }


def id_token_claims(
    *,
    issuer: str,
    audience: str,
    email: str,
    name: str,
    now: int,
    ttl_s: int,
    jti: str,
) -> dict[str, Any]:
    """Claims of a dev identity provider ID token."""
    return {
        "iss": issuer,
        "aud": audience,
        "sub": dev_subject(email),
        "email": email,
        "email_verified": True,
        "name": name,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": jti,
    }


def dev_subject(email: str) -> str:
    """The dev identity provider's stable subject for an email (case-insensitive)."""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f"dev_{digest[:32]}"
