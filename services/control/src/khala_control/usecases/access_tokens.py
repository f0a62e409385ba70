"""Verification of control's own access tokens, with a short cache of successes.

An ES256 verification costs about 0.2 ms of CPU, more than the rest of a
request, and a client presents the same access token for its whole lifetime.
So a token that verified is remembered (by its exact text) for at most
`CACHE_S`, and never past `exp` plus the allowed clock skew: exactly as long
as the verifier itself would keep accepting it with its cached JWKS (also
refreshed every `CACHE_S`). Refusals are never cached. Session liveness is not
part of this: callers check the session on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from khala_common.jwt_verify import DEFAULT_LEEWAY_S, JwksCache, TokenVerifier
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
        )
        self._clock = clock
        self._max_entries = max_entries
        self._verified: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's verified claims."""
        now = self._clock()
        cached = self._verified.get(token)
        if cached is not None and now < cached[0]:
            return cached[1]
        claims = await self._verifier.verify(token)
        until = min(now + CACHE_S, float(claims["exp"]) + DEFAULT_LEEWAY_S)
        self._verified[token] = (until, claims)
        self._verified.move_to_end(token)
        while len(self._verified) > self._max_entries:
            self._verified.popitem(last=False)
        return claims
