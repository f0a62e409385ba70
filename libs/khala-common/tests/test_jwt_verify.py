"""Verification rules of khala_common.jwt_verify, with keys made in the test."""

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from khala_common.jwt_verify import JwksCache, TokenError, TokenVerifier

ISS = "https://control.test"
AUD = "khala-gateway"


def _keypair(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return key, jwk


KEY, JWK = _keypair("k1")
OTHER_KEY, _ = _keypair("k2")


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "u1", "iat": now, "nbf": now, "exp": now + 300}
    claims.update(overrides)
    return claims


def _token(
    claims: dict[str, Any] | None = None, key: Any = KEY, kid: str = "k1", alg: str = "ES256"
) -> str:
    return jwt.encode(claims or _claims(), key, algorithm=alg, headers={"kid": kid})


class CountingFetcher:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return self.jwks


def _verifier(fetcher: CountingFetcher | None = None) -> TokenVerifier:
    fetcher = fetcher or CountingFetcher({"keys": [JWK]})
    return TokenVerifier(JwksCache(fetcher), issuer=ISS, audience=AUD)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_valid_token_verifies() -> None:
    claims = await _verifier().verify(_token())
    assert claims["sub"] == "u1"


@pytest.mark.parametrize(
    ("token_factory", "code", "fragment"),
    [
        (lambda: "", "unauthorized", "missing"),
        (lambda: "not.a.jwt", "unauthorized", "malformed"),
        (
            lambda: _b64({"alg": "none", "kid": "k1"}) + "." + _b64(_claims()) + ".",
            "unauthorized",
            "not allowed",
        ),
        (
            lambda: jwt.encode(
                _claims(),
                KEY.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()[:32],
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            "unauthorized",
            "not allowed",
        ),
        (lambda: _token(_claims(exp=int(time.time()) - 120)), "token_expired", "expired"),
        (lambda: _token(_claims(nbf=int(time.time()) + 600)), "unauthorized", "not yet valid"),
        (lambda: _token(_claims(aud="other")), "unauthorized", "audience"),
        (lambda: _token(_claims(iss="https://evil")), "unauthorized", "issuer"),
        (lambda: _token(kid="nope"), "unauthorized", "unknown kid"),
        (lambda: _token(key=OTHER_KEY), "unauthorized", "signature"),
    ],
)
async def test_refusals_are_deterministic(token_factory: Any, code: str, fragment: str) -> None:
    with pytest.raises(TokenError) as info:
        await _verifier().verify(token_factory())
    assert info.value.code == code
    assert fragment in info.value.message


async def test_tampered_payload_is_refused() -> None:
    header, _, signature = _token().split(".")
    forged = _b64(_claims(sub="admin"))
    with pytest.raises(TokenError) as info:
        await _verifier().verify(f"{header}.{forged}.{signature}")
    assert info.value.code == "unauthorized"


async def test_expiry_within_leeway_is_accepted() -> None:
    claims = await _verifier().verify(_token(_claims(exp=int(time.time()) - 10)))
    assert claims["sub"] == "u1"


async def test_unknown_kid_refetch_is_rate_limited() -> None:
    fetcher = CountingFetcher({"keys": [JWK]})
    verifier = _verifier(fetcher)
    for _ in range(5):
        with pytest.raises(TokenError):
            await verifier.verify(_token(kid="nope"))
    # one initial fetch + at most one forced refetch inside the rate-limit window
    assert fetcher.calls <= 2


async def test_rotated_key_is_found_by_refetch() -> None:
    new_key, new_jwk = _keypair("k3")
    fetcher = CountingFetcher({"keys": [JWK]})
    cache = JwksCache(fetcher, min_refetch_interval_s=0)
    verifier = TokenVerifier(cache, issuer=ISS, audience=AUD)
    await verifier.verify(_token())
    fetcher.jwks = {"keys": [JWK, new_jwk]}
    claims = await verifier.verify(_token(key=new_key, kid="k3"))
    assert claims["sub"] == "u1"


async def test_a_remembered_token_is_still_refused_once_it_expires() -> None:
    now = [time.time()]
    verifier = TokenVerifier(
        JwksCache(CountingFetcher({"keys": [JWK]})), issuer=ISS, audience=AUD, clock=lambda: now[0]
    )
    token = _token(_claims(exp=int(now[0]) + 60))
    first = await verifier.verify(token)
    first["sub"] = "mutated"  # callers get their own copy
    assert (await verifier.verify(token))["sub"] == "u1"
    now[0] += 60 + 29  # inside the leeway
    assert (await verifier.verify(token))["sub"] == "u1"
    now[0] += 2
    with pytest.raises(TokenError) as refused:
        await verifier.verify(token)
    assert refused.value.code == "token_expired"


async def test_a_remembered_token_is_refused_once_its_key_is_withdrawn() -> None:
    fetcher = CountingFetcher({"keys": [JWK]})
    clock = [0.0]
    cache = JwksCache(fetcher, clock=lambda: clock[0])
    verifier = TokenVerifier(cache, issuer=ISS, audience=AUD)
    token = _token()
    await verifier.verify(token)
    fetcher.jwks = {"keys": []}  # the key was rotated out
    clock[0] += 10_000  # past the JWKS cache's lifetime
    with pytest.raises(TokenError) as refused:
        await verifier.verify(token)
    assert refused.value.code == "unauthorized"


async def test_a_tampered_copy_of_a_remembered_token_is_refused() -> None:
    verifier = _verifier()
    token = _token()
    await verifier.verify(token)
    header, _payload, signature = token.split(".")
    forged = ".".join([header, _b64({**_claims(), "sub": "admin"}), signature])
    with pytest.raises(TokenError):
        await verifier.verify(forged)


async def test_ready_on_cached_keys_while_the_issuer_is_down_not_before_the_first_fetch() -> None:
    import aiohttp

    now = [0.0]
    up = [False]

    async def fetcher() -> dict[str, Any]:
        if not up[0]:
            raise aiohttp.ClientConnectionError("issuer down")
        return {"keys": [JWK]}

    cache = JwksCache(fetcher, ttl_s=300.0, clock=lambda: now[0])
    with pytest.raises(Exception, match="issuer down"):
        await cache.ready()  # never fetched: cannot verify anything, not ready
    up[0] = True
    await cache.ready()
    up[0] = False
    now[0] = 10_000.0  # TTL long expired, issuer down: the cached key still verifies
    await cache.ready()
    assert list(cache.kids()) == ["k1"]
