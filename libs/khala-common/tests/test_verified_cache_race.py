"""The verified-token cache under concurrency: verifications interleave at the JWKS
await, and an entry evicted or dropped meanwhile must not break another one."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from khala_common.jwt_verify import JwksCache, TokenError, TokenVerifier


async def test_concurrent_verifications_with_a_tiny_cache_never_fail() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "alg": "ES256", "use": "sig"})

    async def fetch() -> dict[str, Any]:
        await asyncio.sleep(0)  # every lookup suspends: verifications interleave
        return {"keys": [jwk]}

    verifier = TokenVerifier(
        JwksCache(fetch, ttl_s=0.0, min_refetch_interval_s=0.0),
        issuer="iss",
        audience="aud",
        cache_size=2,
    )
    now = int(time.time())
    tokens = [
        jwt.encode(
            {"iss": "iss", "aud": "aud", "sub": f"u{i}", "iat": now, "nbf": now, "exp": now + 60},
            key,
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        for i in range(8)
    ]
    for _ in range(3):
        results = await asyncio.gather(
            *(verifier.verify(t) for t in tokens * 4), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert [r["sub"] for r in results] == [f"u{i}" for i in range(8)] * 4  # type: ignore[index]
    expired = jwt.encode(
        {
            "iss": "iss",
            "aud": "aud",
            "sub": "x",
            "iat": now - 200,
            "nbf": now - 200,
            "exp": now - 100,
        },
        key,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    results = await asyncio.gather(
        *(verifier.verify(expired) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, TokenError) and r.code == "token_expired" for r in results)
