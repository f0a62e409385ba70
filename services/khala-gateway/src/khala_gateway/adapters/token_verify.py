"""Sync-token verification for Hello and RefreshAuth (DESIGN §8 Auth)."""

from __future__ import annotations

from khala_common.jwt_verify import TokenError, TokenVerifier
from khala_gateway.domain import codes
from khala_gateway.domain.principal import ClaimsError, Principal

SYNC_AUDIENCE = "khala-gateway"


class Authenticator:
    """Turns a sync JWT into a Principal, or raises TokenError (unauthorized | token_expired)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def authenticate(self, token: str) -> Principal:
        """Verify signature, alg, kid, iss, aud, exp, nbf (30 s skew) and read the claims."""
        claims = await self._verifier.verify(token)
        try:
            return Principal.from_claims(claims)
        except ClaimsError as exc:
            raise TokenError(codes.UNAUTHORIZED, str(exc)) from None
