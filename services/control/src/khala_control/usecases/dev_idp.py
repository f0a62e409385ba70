"""The built-in dev identity provider (only when KHALA_DEV_IDP_ENABLED=true).

It signs ID tokens for any email, with its own ES256 key persisted in
Postgres (purpose `dev_idp`), and serves a discovery document and JWKS so that
control verifies its tokens exactly like an external OIDC provider's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from khala_control.domain.tokens import id_token_claims
from khala_control.domain.validation import MAX_NAME, check_email, check_length
from khala_control.metrics import TOKENS_MINTED
from khala_control.usecases.signing import ALGORITHM, Signer

ISSUER_PATH = "/dev-idp"
ID_TOKEN_TTL_S = 600


class DevIdentityProvider:
    """Issues dev ID tokens; `issuer` is `<token issuer>/dev-idp`."""

    def __init__(
        self,
        keyring: Signer,
        issuer: str,
        audience: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self.issuer = issuer
        self._audience = audience
        self._clock = clock

    async def issue(self, email: str, name: str) -> str:
        """An ID token for `email`; the subject is stable per email."""
        email = check_email(email)
        name = check_length("name", name, MAX_NAME, required=False) or email.split("@")[0]
        claims = id_token_claims(
            issuer=self.issuer,
            audience=self._audience,
            email=email,
            name=name,
            now=int(self._clock()),
            ttl_s=ID_TOKEN_TTL_S,
            jti=uuid.uuid4().hex,
        )
        token, _ = await self._keyring.sign(claims)
        TOKENS_MINTED.labels(kind="dev_id_token").inc()
        return token

    def discovery(self) -> dict[str, Any]:
        """The OpenID discovery document of the dev issuer."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks.json",
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "email", "email_verified", "name"],
        }

    async def jwks(self) -> dict[str, Any]:
        """The dev issuer's public keys."""
        return await self._keyring.jwks()
