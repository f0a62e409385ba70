"""Token claim sets (no I/O)."""

from __future__ import annotations

import pytest

from khala_control.domain.tokens import access_claims, dev_subject, id_token_claims, sync_claims


def test_access_claims_are_exactly_the_documented_ones() -> None:
    claims = access_claims(
        issuer="https://control.example",
        user_id="usr_1",
        session_id="ses_1",
        device_id="dev_1",
        surface="ios",
        now=1000,
        ttl_s=900,
        jti="j1",
    )
    assert claims == {
        "iss": "https://control.example",
        "aud": "khala-api",
        "sub": "usr_1",
        "sid": "ses_1",
        "did": "dev_1",
        "surface": "ios",
        "iat": 1000,
        "nbf": 1000,
        "exp": 1900,
        "jti": "j1",
    }


def test_sync_claims_are_exactly_the_designed_ones() -> None:
    claims = sync_claims(
        issuer="i",
        user_id="u",
        session_id="s",
        device_id="d",
        surface="web",
        scope=("org.a.runs",),
        now=10,
        ttl_s=300,
        jti="j",
    )
    assert set(claims) == {
        "iss",
        "aud",
        "sub",
        "sid",
        "did",
        "iat",
        "nbf",
        "exp",
        "jti",
        "surface",
        "scope",
    }
    assert claims["aud"] == "khala-gateway"
    assert claims["exp"] == 310
    assert claims["scope"] == ["org.a.runs"]


def test_dev_subject_is_stable_per_email_and_case_insensitive() -> None:
    assert dev_subject("Ada@Example.com") == dev_subject(" ada@example.com")
    assert dev_subject("ada@example.com") != dev_subject("bob@example.com")
    claims = id_token_claims(
        issuer="i/dev-idp",
        audience="khala-control",
        email="a@b.c",
        name="A",
        now=5,
        ttl_s=60,
        jti="x",
    )
    assert claims["sub"] == dev_subject("a@b.c")
    assert claims["aud"] == "khala-control"


def test_fast_es256_encoding_verifies_with_pyjwt() -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from khala_control.usecases.signing import encode_es256, public_jwk

    private = ec.generate_private_key(ec.SECP256R1())
    claims = {"sub": "usr_1", "scope": ["org.a.runs"], "exp": 2_000_000_000, "aud": "khala-gateway"}
    token = encode_es256(claims, private, "kid-1")
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "kid-1", "typ": "JWT"}
    assert (
        jwt.decode(token, private.public_key(), algorithms=["ES256"], audience="khala-gateway")
        == claims
    )
    jwk = public_jwk(private)
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"} and "d" not in jwk
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.public_key(), algorithms=["ES256"], audience="khala-gateway")
