"""Verification of identity providers' ID tokens (generic OIDC).

For each trusted issuer: fetch `<issuer>/.well-known/openid-configuration`,
check its `issuer` matches, then verify tokens against its `jwks_uri` with
`khala_common.jwt_verify` (ES256/RS256 only, kid lookup with rate-limited
refetch, iss/aud/exp/nbf/iat checks). The issuer is chosen by the token's
unverified `iss` among the configured ones; its signature is then checked
only against that issuer's keys, so one issuer cannot mint for another. The dev identity provider is just one
more issuer on this path, discovered over HTTP like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import jwt

from khala_common.jwt_verify import JwksCache, TokenError, TokenVerifier, http_jwks_fetcher
from khala_common.logs import get_logger
from khala_control.adapters.oidc import fetch_discovery
from khala_control.domain.errors import ControlError
from khala_control.domain.validation import storable

log = get_logger("identity")


@dataclass(frozen=True)
class Identity:
    """Who an ID token says the caller is."""

    issuer: str
    subject: str
    email: str
    name: str


class OidcVerifier:
    """Verifies ID tokens from a fixed set of trusted issuers."""

    def __init__(
        self,
        issuers: Sequence[str],
        audience: str,
        *,
        http_timeout_s: float = 5.0,
        discovery_ttl_s: float = 3600.0,
        jwks_min_refetch_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuers = tuple(issuers)
        self._audience = audience
        self._timeout_s = http_timeout_s
        self._ttl_s = discovery_ttl_s
        self._min_refetch_s = jwks_min_refetch_s
        self._clock = clock
        self._verifiers: dict[str, tuple[float, TokenVerifier]] = {}
        self._lock = asyncio.Lock()

    async def verify(self, id_token: str) -> Identity:
        """The identity in `id_token`; `unauthorized`/`token_expired` if refused."""
        issuer = self._claimed_issuer(id_token)
        verifier = await self._verifier(issuer)
        try:
            claims = await verifier.verify(id_token)
        except TokenError as exc:
            raise ControlError(exc.code, f"id_token refused: {exc.message}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or not storable(subject):
            raise ControlError("unauthorized", "id_token refused: it has no usable subject")
        return Identity(issuer, subject, _text(claims.get("email")), _text(claims.get("name")))

    def _claimed_issuer(self, id_token: str) -> str:
        try:
            unverified = jwt.decode(id_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise ControlError("unauthorized", "id_token is malformed") from None
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise ControlError("unauthorized", f"id_token issuer {issuer!r} is not trusted")
        return issuer

    async def _verifier(self, issuer: str) -> TokenVerifier:
        async with self._lock:
            cached = self._verifiers.get(issuer)
            if cached is not None and self._clock() - cached[0] < self._ttl_s:
                return cached[1]
            try:
                document = await fetch_discovery(issuer, self._timeout_s)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("oidc discovery failed", issuer=issuer, error=str(exc))
                if cached is not None:
                    return cached[1]
                raise ControlError(
                    "idp_unavailable", f"identity provider {issuer} cannot be reached"
                ) from None
            jwks = JwksCache(
                http_jwks_fetcher(document["jwks_uri"], self._timeout_s),
                min_refetch_interval_s=self._min_refetch_s,
            )
            verifier = TokenVerifier(
                jwks, issuer=issuer, audience=self._audience, required=("exp", "iat", "sub")
            )
            self._verifiers[issuer] = (self._clock(), verifier)
            return verifier


def _text(value: object) -> str:
    # Profile claims are informative: NUL (which Postgres text cannot hold) is dropped.
    return value.replace("\x00", "").strip()[:200] if isinstance(value, str) else ""
