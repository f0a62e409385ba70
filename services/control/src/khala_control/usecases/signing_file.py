"""Signing keys provided as a file (a Kubernetes Secret), instead of Postgres.

`KHALA_CONTROL_SIGNING_KEY_FILE` names a PEM file holding one or more P-256
private keys (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY` blocks). The
**first** key signs; every key in the file is published in the JWKS. The file
is re-read when its modification time, size or inode changes (checked at most
every `refresh_s`), so an updated Secret takes effect without a restart.

Rotation without a failed verification is three Secret updates, each rolled
out to every replica before the next: (1) append the new key after the
current one (published, not signing); (2) swap them, so the new key signs and
the old one stays published; (3) once the old key's tokens have expired
(access token TTL), remove it. At every moment, every replica publishes
every key any replica signs with.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from khala_common.logs import get_logger
from khala_common.settings import SettingsError
from khala_control.usecases.signing import encode_es256, public_jwk

VARIABLE = "KHALA_CONTROL_SIGNING_KEY_FILE"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?:EC )?PRIVATE KEY-----.+?-----END (?:EC )?PRIVATE KEY-----", re.DOTALL
)
log = get_logger("signing")

_Keys = list[tuple[str, ec.EllipticCurvePrivateKey, dict[str, Any]]]


def load_key_file(path: str) -> _Keys:
    """`(kid, private key, public JWK)` of every key in the file, in file order.

    Raises SettingsError naming the variable when the file is unreadable, holds
    no key, or holds a key that is not an unencrypted P-256 key.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SettingsError(VARIABLE, f"cannot read {path}: {exc.strerror}") from None
    keys: _Keys = []
    for number, block in enumerate(_PEM_BLOCK.findall(data), start=1):
        try:
            private = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError) as exc:
            raise SettingsError(
                VARIABLE, f"key {number} in {path} cannot be loaded: {exc}"
            ) from None
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
            private.curve, ec.SECP256R1
        ):
            raise SettingsError(VARIABLE, f"key {number} in {path} is not a P-256 (ES256) key")
        jwk = public_jwk(private)
        keys.append((jwk["kid"], private, jwk))
    if not keys:
        raise SettingsError(VARIABLE, f"{path} holds no PEM private key")
    return keys


class FileKeyRing:
    """Keys from a PEM file: the first signs, all are published."""

    def __init__(
        self,
        path: str,
        *,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._refresh_s = refresh_s
        self._clock = clock
        self._keys: _Keys = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = 0.0

    async def ensure_active(self) -> str:
        """Load the file now (SettingsError if it is unusable); returns the signing kid."""
        self._load()
        return self._keys[0][0]

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        """`(token, kid)`: the claims signed with the file's first key."""
        self._maybe_reload()
        kid, private, _ = self._keys[0]
        return encode_es256(claims, private, kid), kid

    async def jwks(self) -> dict[str, Any]:
        """Every key of the file, signing key first."""
        self._maybe_reload()
        return {"keys": [dict(jwk) for _, _, jwk in self._keys]}

    def _maybe_reload(self) -> None:
        if self._keys and self._clock() - self._checked_at < self._refresh_s:
            return
        try:
            self._load()
        except SettingsError as exc:
            # Keep signing with the keys we have; a broken Secret update must not
            # take the service down. The warning repeats every refresh interval.
            if not self._keys:
                raise
            self._checked_at = self._clock()
            log.warning("signing key file unusable; keeping the loaded keys", error=str(exc))

    def _load(self) -> None:
        self._checked_at = self._clock()
        try:
            info = os.stat(self.path)
        except OSError as exc:
            raise SettingsError(VARIABLE, f"cannot read {self.path}: {exc.strerror}") from None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp and self._keys:
            return
        keys = load_key_file(self.path)
        if self._keys and [k[0] for k in keys] != [k[0] for k in self._keys]:
            log.info("signing key file reloaded", kids=[k[0] for k in keys])
        self._keys, self._stamp = keys, stamp
