"""Helpers of control's tests: a small real OIDC issuer, and token forgeries.

`OidcIssuer` is an aiohttp server on an ephemeral port that serves an OpenID
discovery document and a JWKS and mints ID tokens with its own keys (ES256
and RS256), so control's OIDC path is exercised over real HTTP exactly as
with an external provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "khala-control"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def b64(data: dict[str, Any]) -> str:
    """base64url (unpadded) of a JSON object."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Header, claims (unverified) and signature of a compact JWS."""
    header, payload, signature = token.split(".")

    def pad(segment: str) -> bytes:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

    return json.loads(pad(header)), json.loads(pad(payload)), signature


def alg_none(token: str) -> str:
    """The same claims with `alg: none` and no signature."""
    header, claims, _ = parts(token)
    return f"{b64({**header, 'alg': 'none'})}.{b64(claims)}."


def hs256_with_secret(token: str, secret: bytes) -> str:
    """The same claims, HS256-signed with `secret` (e.g. a public key's text)."""
    header, claims, _ = parts(token)
    signing_input = f"{b64({**header, 'alg': 'HS256'})}.{b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def tampered(token: str, **changes: Any) -> str:
    """The same header and signature over changed claims."""
    header, claims, signature = parts(token)
    return f"{b64(header)}.{b64({**claims, **changes})}.{signature}"


class OidcIssuer:
    """A real OIDC issuer for tests: discovery + JWKS over HTTP, ID token minting."""

    def __init__(self, *, audience: str = AUDIENCE) -> None:
        self.audience = audience
        self.keys: dict[str, tuple[PrivateKey, str]] = {}
        self.published: list[str] = []
        self.signing_kid = ""
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.claimed_issuer: str | None = None  # a discovery document lying about its issuer
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def issuer(self) -> str:
        """The issuer URL (`iss`)."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> OidcIssuer:
        """Serve on an ephemeral port, with one ES256 key."""
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.add_key("ES256")
        return self

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    def add_key(self, alg: str = "ES256", *, publish: bool = True, sign: bool = True) -> str:
        """A new key (ES256 or RS256); published in the JWKS and/or used to sign."""
        private: PrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if alg == "ES256"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        kid = f"k-{uuid.uuid4().hex[:12]}"
        self.keys[kid] = (private, alg)
        if publish:
            self.published.append(kid)
        if sign:
            self.signing_kid = kid
        return kid

    def public_jwk(self, kid: str) -> dict[str, Any]:
        """The public JWK of one of the issuer's keys."""
        private, alg = self.keys[kid]
        tool = ECAlgorithm if alg == "ES256" else RSAAlgorithm
        jwk: dict[str, Any] = dict(tool.to_jwk(private.public_key(), as_dict=True))  # type: ignore[attr-defined]
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        return jwk

    def id_token(
        self,
        subject: str | None = None,
        *,
        email: str = "",
        kid: str | None = None,
        drop: tuple[str, ...] = (),
        **overrides: Any,
    ) -> str:
        """An ID token signed by the issuer (claims overridable, some droppable)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or f"sub-{uuid.uuid4().hex[:12]}",
            "email": email,
            "name": "OIDC User",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        for name in drop:
            claims.pop(name, None)
        kid = kid or self.signing_kid
        private, alg = self.keys[kid]
        return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})

    async def _discovery(self, _: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response(
            {
                "issuer": self.claimed_issuer or self.issuer,
                "jwks_uri": f"{self.issuer}/jwks",
                "id_token_signing_alg_values_supported": ["ES256", "RS256"],
                "subject_types_supported": ["public"],
                "response_types_supported": ["id_token"],
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [self.public_jwk(kid) for kid in self.published]})
