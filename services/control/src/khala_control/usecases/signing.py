"""ES256 signing keys kept in Postgres, encrypted at rest.

One **active** key per purpose signs; the JWKS publishes the active key, a
**next** key being rolled out, and the **previous** key. Keys live in
`control.signing_keys` with the private PEM encrypted by Fernet. The first
process to start generates the key; concurrent starters race on a partial
unique index and all converge on the winner.

Rotation is two-phase so that no verifier ever meets a kid it cannot find:
the new key is first *staged* ('next': published, not signing) and only
*promoted* to active after `publish_delay_s`, which must exceed the time a
verifier may refuse to refetch its JWKS (khala_common's `JwksCache` refetches
on an unknown kid at most every 5 s). A running process re-reads the active
key every `refresh_s`; the JWKS is read from Postgres on every call. The
decrypted private key object is cached, so signing does no I/O.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import asyncpg
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm

from khala_common.logs import get_logger
from khala_control.storage import keys as key_store
from khala_control.storage.keys import KeyStatus, StoredKey

ALGORITHM = "ES256"
# Longest time a process serves its in-memory JWKS before reading Postgres again.
JWKS_CACHE_S = 1.0
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
log = get_logger("signing")


class Signer(Protocol):
    """What token issuers need: sign with the active key, publish the JWKS."""

    async def ensure_active(self) -> str:
        """Load (or create) the active key; returns its kid."""
        ...

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        """`(token, kid)`: the claims signed with the active key."""
        ...

    async def jwks(self) -> dict[str, Any]:
        """The public keys verifiers should accept."""
        ...


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def encode_es256(claims: Mapping[str, Any], private: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """A compact ES256 JWS of `claims` (RFC 7515/7518), as PyJWT would produce.

    Written out because it is the hot path of every mint: it skips PyJWT's
    per-call algorithm lookup and claim re-checks (about a quarter of a sign).
    """
    header = json.dumps({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}, separators=(",", ":"))
    payload = json.dumps(claims, separators=(",", ":"))
    signing_input = _b64(header.encode()) + b"." + _b64(payload.encode())
    r, s = decode_dss_signature(private.sign(signing_input, _ECDSA_SHA256))
    signature = _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return (signing_input + b"." + signature).decode()


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an EC public JWK (used as the kid)."""
    canonical = json.dumps(
        {name: jwk[name] for name in ("crv", "kty", "x", "y")},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(private: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The published JWK of a P-256 key, with its thumbprint as kid."""
    jwk: dict[str, Any] = dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
    jwk.update({"kid": jwk_thumbprint(jwk), "alg": ALGORITHM, "use": "sig"})
    return jwk


def generate_key(purpose: str, cipher: MultiFernet) -> StoredKey:
    """A fresh P-256 key, private half encrypted, public half as a JWK with kid."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwk = public_jwk(private)
    return StoredKey(jwk["kid"], purpose, cipher.encrypt(pem), jwk)


class KeyRing:
    """The database-stored signing keys of one purpose (`control` or `dev_idp`)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        purpose: str,
        cipher: MultiFernet,
        *,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self.purpose = purpose
        self._cipher = cipher
        self._refresh_s = refresh_s
        self._clock = clock
        self._current: tuple[str, ec.EllipticCurvePrivateKey] | None = None
        self._loaded_at = 0.0
        self._jwks: tuple[float, builtins.list[dict[str, Any]]] | None = None
        self._jwks_load: asyncio.Future[builtins.list[dict[str, Any]]] | None = None

    async def ensure_active(self) -> str:
        """The active kid, generating the first key if there is none."""
        async with self._pool.acquire() as conn:
            stored = await key_store.active_key(conn, self.purpose)
            if stored is None:
                candidate = generate_key(self.purpose, self._cipher)
                if await key_store.insert_active_if_none(conn, candidate):
                    log.info("signing key generated", purpose=self.purpose, kid=candidate.kid)
                stored = await key_store.active_key(conn, self.purpose)
        if stored is None:
            raise RuntimeError(f"no active {self.purpose} signing key after generation")
        self._install(stored)
        return stored.kid

    async def rotate(
        self,
        publish_delay_s: float = 10.0,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> str:
        """Stage a new key, wait `publish_delay_s`, then make it active; returns its kid.

        Resumable: a key already staged (by an interrupted rotation) is promoted
        instead of staging another, once it has been published long enough.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await key_store.lock_rotation(conn, self.purpose)
            staged = await key_store.staged_key(conn, self.purpose)
            if staged is None:
                new_key = generate_key(self.purpose, self._cipher)
                await key_store.stage(conn, new_key)
                staged = (new_key.kid, 0.0)
                log.info("signing key staged", purpose=self.purpose, kid=new_key.kid)
        self._jwks = None  # publish the staged key from this process at once
        kid, age_s = staged
        if publish_delay_s > age_s:
            await sleep(publish_delay_s - age_s)
        async with self._pool.acquire() as conn, conn.transaction():
            await key_store.lock_rotation(conn, self.purpose)
            promoted = await key_store.promote(conn, self.purpose, kid)
            active = await key_store.active_key(conn, self.purpose)
        if active is None:
            raise RuntimeError(f"no active {self.purpose} signing key after rotation")
        if promoted:
            log.info("signing key rotated", purpose=self.purpose, kid=kid)
        self._install(active)
        self._jwks = None
        return active.kid

    async def list(self) -> list[KeyStatus]:
        """Every key of this purpose with its status, oldest first."""
        async with self._pool.acquire() as conn:
            return await key_store.list_keys(conn, self.purpose)

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        """`(token, kid)`: the claims signed with the active key."""
        kid, private = await self._active()
        return encode_es256(claims, private, kid), kid

    async def jwks(self) -> dict[str, Any]:
        """The JWKS document: active, next and previous public keys.

        Served from memory, read again from Postgres at most every
        `min(refresh_s, JWKS_CACHE_S)` (concurrent reads share one query), so
        the public endpoint costs no Postgres round trip per request. A key
        staged by a rotation is published within that time, well inside the
        rotation's publish delay (10 s by default).
        """
        cached = self._jwks
        if cached is not None and self._clock() - cached[0] < min(self._refresh_s, JWKS_CACHE_S):
            return {"keys": [dict(key) for key in cached[1]]}
        if self._jwks_load is None or self._jwks_load.done():
            self._jwks_load = asyncio.ensure_future(self._load_jwks())
        keys = await asyncio.shield(self._jwks_load)
        return {"keys": [dict(key) for key in keys]}

    async def _load_jwks(self) -> builtins.list[dict[str, Any]]:
        started = self._clock()
        async with self._pool.acquire() as conn:
            keys = await key_store.published_jwks(conn, self.purpose)
        self._jwks = (started, keys)
        return keys

    async def _active(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        if self._current is None or self._clock() - self._loaded_at >= self._refresh_s:
            async with self._pool.acquire() as conn:
                stored = await key_store.active_key(conn, self.purpose)
            if stored is None:
                raise RuntimeError(f"no active {self.purpose} signing key")
            if self._current is None or self._current[0] != stored.kid:
                self._install(stored)
            self._loaded_at = self._clock()
        assert self._current is not None
        return self._current

    def _install(self, stored: StoredKey) -> None:
        pem = self._cipher.decrypt(stored.private_key_enc)
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise RuntimeError(f"signing key {stored.kid} is not an EC key")
        self._current = (stored.kid, private)
        self._loaded_at = self._clock()
