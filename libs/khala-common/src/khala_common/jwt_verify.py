"""JWT verification against a cached JWKS.

Only asymmetric algorithms are accepted (ES256, RS256): `none` and HS* are
refused before any key is looked up, which closes the "HS256 signed with the
public key" confusion. Keys are found by `kid`; an unknown kid triggers one
JWKS refetch, rate limited so a flood of forged kids cannot hammer the issuer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import jwt
from jwt import PyJWK

ALLOWED_ALGORITHMS = ("ES256", "RS256")
DEFAULT_LEEWAY_S = 30


class TokenError(Exception):
    """A token was refused; `code` is `unauthorized` or `token_expired`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]


def http_jwks_fetcher(url: str, timeout_s: float = 5.0) -> JwksFetcher:
    """A fetcher that GETs a JWKS document over HTTP."""

    async def fetch() -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url) as response:
                response.raise_for_status()
                data: dict[str, Any] = await response.json(content_type=None)
                return data

    return fetch


class JwksCache:
    """Keys by kid, refreshed on expiry or on an unknown kid (rate limited)."""

    def __init__(
        self,
        fetcher: JwksFetcher,
        *,
        ttl_s: float = 300.0,
        min_refetch_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self._ttl_s = ttl_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def parse(jwks: dict[str, Any]) -> dict[str, PyJWK]:
        """Usable keys of a JWKS document, by kid (keys of other algorithms skipped)."""
        keys: dict[str, PyJWK] = {}
        for entry in jwks.get("keys", []):
            kid = entry.get("kid")
            if not kid or entry.get("alg", "ES256") not in ALLOWED_ALGORITHMS:
                continue
            try:
                keys[kid] = PyJWK(entry)
            except jwt.PyJWTError:
                continue
        return keys

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = self._clock()
            if self._fetched_at is not None:
                age = now - self._fetched_at
                if force and age < self._min_refetch_interval_s:
                    return
                if not force and age < self._ttl_s:
                    return
            try:
                document = await self._fetcher()
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError):
                if not self._keys:
                    raise
                return  # keep serving the cached keys while the issuer is down
            self._keys = self.parse(document)
            self._fetched_at = now

    async def key_for(self, kid: str) -> PyJWK | None:
        """The key named `kid`, refetching once (rate limited) if unknown."""
        await self._refresh(force=False)
        key = self._keys.get(kid)
        if key is None:
            await self._refresh(force=True)
            key = self._keys.get(kid)
        return key

    def kids(self) -> Iterable[str]:
        return tuple(self._keys)

    async def ready(self) -> None:
        """Readiness: keys can be verified. Refreshes when the TTL expired; an issuer
        that is down keeps the cached keys (ready), so a control outage does not take
        every verifier out of its load balancer. Raises only while no key was ever
        fetched (or the issuer publishes none)."""
        await self._refresh(force=False)
        if not self._keys:
            raise RuntimeError("no usable signing key fetched from the issuer yet")


# Tokens whose signature and claims were verified, per verifier (LRU).
VERIFIED_CACHE_SIZE = 4096


class TokenVerifier:
    """Verifies signature, alg, kid, iss, aud, exp and nbf of one token class.

    A token that verified is remembered (up to `cache_size`, least recently
    used first out), so a client presenting the same token on every request
    costs one signature check, not one per request. A remembered token is
    still refused once it expires (same leeway) or once its kid leaves the
    signing keys; everything else a check could depend on is in the token.
    """

    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str,
        leeway_s: int = DEFAULT_LEEWAY_S,
        required: tuple[str, ...] = ("exp", "iat", "sub"),
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._required = list(required)
        self._cache_size = cache_size
        self._clock = clock
        self._verified: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or TokenError with a deterministic code."""
        if not token:
            raise TokenError("unauthorized", "token is missing")
        remembered = self._verified.get(token)
        if remembered is not None:
            kid, claims = remembered
            key = await self._key_for(kid)
            # Other verifications ran during the await: the entry may be gone
            # (evicted, expired, key withdrawn), so never assume it is still there.
            if key is not None:
                exp = claims.get("exp")
                if isinstance(exp, int | float) and self._clock() >= exp + self._leeway_s:
                    self._verified.pop(token, None)
                    raise TokenError("token_expired", "token has expired")
                if token in self._verified:
                    self._verified.move_to_end(token)
                return dict(claims)
            self._verified.pop(token, None)  # its key was withdrawn: verify again (and refuse)
        kid, claims = await self._verify_signed(token)
        if self._cache_size > 0:
            self._verified[token] = (kid, claims)
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
            return dict(claims)
        return claims

    async def _verify_signed(self, token: str) -> tuple[str, dict[str, Any]]:
        """Full verification: the signing key's kid and the claims."""
        alg, kid = _signing_header(token)
        key = await self._key_for(kid)
        if key is None:
            raise TokenError("unauthorized", f"unknown kid {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": self._required},
            )
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from None
        return kid, claims

    async def _key_for(self, kid: str) -> PyJWK | None:
        """The signing key named `kid` (None if unknown); a JWKS outage is a refusal."""
        try:
            return await self._jwks.key_for(kid)
        except Exception:
            raise TokenError("unauthorized", "signing keys are unavailable") from None


def _signing_header(token: str) -> tuple[str, str]:
    """The token's algorithm and kid, checked before any key is looked up."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("unauthorized", "token is malformed") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise TokenError("unauthorized", f"algorithm {alg!r} is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("unauthorized", "token has no kid")
    return str(alg), kid


# What a failed decode means to the caller; any other PyJWTError is a bad
# signature or claim.
_DECODE_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
    (jwt.ExpiredSignatureError, "token_expired", "token has expired"),
    (jwt.ImmatureSignatureError, "unauthorized", "token is not yet valid"),
    (jwt.InvalidAudienceError, "unauthorized", "token audience is wrong"),
    (jwt.InvalidIssuerError, "unauthorized", "token issuer is wrong"),
)


def _refusal(exc: jwt.PyJWTError) -> TokenError:
    """The TokenError for a failed decode."""
    for kind, code, message in _DECODE_REFUSALS:
        if isinstance(exc, kind):
            return TokenError(code, message)
    return TokenError("unauthorized", "token signature or claims are invalid")
