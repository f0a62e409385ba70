"""ES256 signing keys: one active key per purpose signs; active and previous verify.

Keys live in `control.signing_keys` with the private PEM encrypted by Fernet.
The first process to start generates the key; concurrent starters race on a
partial unique index and all converge on the winner. A running process re-reads
the active key every `refresh_s`, so a rotation (CLI `rotate-key`) takes effect
everywhere within that interval; the JWKS is read from Postgres on every call,
so a key is published before any process signs with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import jwt
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from khala_common.logs import get_logger
from khala_control.storage import keys as key_store
from khala_control.storage.keys import StoredKey

ALGORITHM = "ES256"
log = get_logger("signing")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an EC public JWK (used as the kid)."""
    canonical = json.dumps(
        {name: jwk[name] for name in ("crv", "kty", "x", "y")},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def generate_key(purpose: str, cipher: MultiFernet) -> StoredKey:
    """A fresh P-256 key, private half encrypted, public half as a JWK with kid."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwk: dict[str, Any] = dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
    kid = jwk_thumbprint(jwk)
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return StoredKey(kid, purpose, cipher.encrypt(pem), jwk)


class KeyRing:
    """The signing keys of one purpose (`control` or `dev_idp`)."""

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

    async def rotate(self) -> str:
        """Make a new key active (the old one stays published as previous)."""
        new_key = generate_key(self.purpose, self._cipher)
        async with self._pool.acquire() as conn, conn.transaction():
            await key_store.rotate(conn, new_key)
        log.info("signing key rotated", purpose=self.purpose, kid=new_key.kid)
        self._install(new_key)
        return new_key.kid

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        """`(token, kid)`: the claims signed with the active key."""
        kid, private = await self._active()
        token = jwt.encode(dict(claims), private, algorithm=ALGORITHM, headers={"kid": kid})
        return token, kid

    async def jwks(self) -> dict[str, Any]:
        """The JWKS document: active and previous public keys."""
        async with self._pool.acquire() as conn:
            return {"keys": await key_store.published_jwks(conn, self.purpose)}

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
