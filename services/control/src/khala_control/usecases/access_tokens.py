"""Verification of control's own access tokens.

An ES256 verification costs about 0.2 ms of CPU, more than the rest of a
request, and a client presents the same access token for its whole lifetime.
TokenVerifier remembers a token that verified (by its exact text, up to
`MAX_ENTRIES`) and keeps accepting it only while its key is in the JWKS
(refreshed every `CACHE_S`) and until `exp` plus the allowed clock skew.
Refusals are never remembered. Session liveness is not part of this: callers
check the session on every request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from khala_common.jwt_verify import JwksCache, TokenVerifier
from khala_control.domain.tokens import ACCESS_AUDIENCE
from khala_control.usecases.signing import Signer

CACHE_S = 30.0
MAX_ENTRIES = 10_000
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "sub", "sid", "did", "jti")


class AccessTokenVerifier:
    """`verify(token)` → claims, or TokenError (`unauthorized` / `token_expired`)."""

    def __init__(
        self,
        signer: Signer,
        issuer: str,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._verifier = TokenVerifier(
            JwksCache(signer.jwks, ttl_s=CACHE_S, min_refetch_interval_s=1.0),
            issuer=issuer,
            audience=ACCESS_AUDIENCE,
            required=REQUIRED_CLAIMS,
            cache_size=max_entries,
            clock=clock,
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's verified claims."""
        return await self._verifier.verify(token)
