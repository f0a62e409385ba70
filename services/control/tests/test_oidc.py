"""Sign-in with ID tokens from a real (local) OIDC issuer: discovery, JWKS,
iss/aud checks, key rotation at the issuer, and forged ID tokens."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from control_testkit import OidcIssuer, alg_none, hs256_with_secret, tampered
from cryptography.hazmat.primitives.asymmetric import ec

from khala_control.app import ControlApp

pytestmark = pytest.mark.integration


async def exchange(client, id_token: str, device_id: str = "d1") -> tuple[int, dict]:
    return await client.call(  # type: ignore[no-any-return]
        "POST",
        "/api/auth/session",
        {"id_token": id_token, "device_id": device_id, "surface": "desktop", "client_version": "1"},
    )


@pytest.fixture
def oidc_client(oidc_control: ControlApp, http, make_client):
    return make_client(oidc_control.base_url, http)


@pytest.fixture
async def fresh_issuer() -> AsyncIterator[OidcIssuer]:
    issuer = await OidcIssuer().start()
    try:
        yield issuer
    finally:
        await issuer.stop()


async def test_es256_and_rs256_id_tokens_sign_in(oidc_issuer, oidc_client, unique) -> None:
    subject = f"alice-{unique}"
    status, first = await exchange(oidc_client, oidc_issuer.id_token(subject, email="a@x.io"))
    assert status == 200, first
    rs_kid = oidc_issuer.add_key("RS256", sign=False)
    token = oidc_issuer.id_token(subject, email="alice@x.io", kid=rs_kid)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    status, second = await exchange(oidc_client, token, device_id="d2")
    assert status == 200, second
    # (issuer, sub) is the identity: same user, profile follows the latest ID token
    assert second["user_id"] == first["user_id"]
    me = await oidc_client.ok("GET", "/api/me", token=second["access_token"])
    assert me["user"]["email"] == "alice@x.io"


async def test_the_dev_idp_is_off_unless_enabled(oidc_client) -> None:
    status, body = await oidc_client.call("POST", "/api/dev/id-token", {"email": "a@b.c"})
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_several_issuers_are_distinct_identities(
    control_settings, oidc_issuer, fresh_issuer, http, make_client, unique
) -> None:
    settings = dataclasses.replace(
        control_settings,
        dev_idp_enabled=False,
        oidc_issuers=(oidc_issuer.issuer, fresh_issuer.issuer),
    )
    async with ControlApp(settings) as app:
        client = make_client(app.base_url, http)
        subject = f"same-sub-{unique}"
        status, a = await exchange(client, oidc_issuer.id_token(subject))
        assert status == 200, a
        status, b = await exchange(client, fresh_issuer.id_token(subject))
        assert status == 200, b
        assert a["user_id"] != b["user_id"]
        # A key of one trusted issuer cannot sign for the other.
        foreign_kid = oidc_issuer.signing_kid
        fresh_issuer.keys[foreign_kid] = oidc_issuer.keys[foreign_kid]
        forged = fresh_issuer.id_token(subject, kid=foreign_kid)
        status, body = await exchange(client, forged)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert "unknown kid" in body["error"]["message"]


def _forgeries(issuer: OidcIssuer) -> dict[str, tuple[str, str, str]]:
    """name → (id token, code, words the message contains)."""
    now = int(time.time())
    good = issuer.id_token()
    public_text = json.dumps(issuer.public_jwk(issuer.signing_kid)).encode()
    outsider = ec.generate_private_key(ec.SECP256R1())
    return {
        "expired": (
            issuer.id_token(iat=now - 7200, nbf=now - 7200, exp=now - 3600),
            "token_expired",
            "expired",
        ),
        "nbf_in_the_future": (issuer.id_token(nbf=now + 600), "unauthorized", "not yet valid"),
        "wrong_audience": (issuer.id_token(aud="another-client"), "unauthorized", "audience"),
        "untrusted_issuer": (
            issuer.id_token(iss="https://evil.example"),
            "unauthorized",
            "not trusted",
        ),
        "unknown_kid": (
            jwt.encode(
                jwt.decode(good, options={"verify_signature": False}),
                outsider,
                algorithm="ES256",
                headers={"kid": "no-such-kid"},
            ),
            "unauthorized",
            "unknown kid",
        ),
        "foreign_key_known_kid": (
            jwt.encode(
                jwt.decode(good, options={"verify_signature": False}),
                outsider,
                algorithm="ES256",
                headers={"kid": issuer.signing_kid},
            ),
            "unauthorized",
            "signature",
        ),
        "alg_none": (alg_none(good), "unauthorized", "not allowed"),
        "hs256_with_public_key": (
            hs256_with_secret(good, public_text),
            "unauthorized",
            "not allowed",
        ),
        "tampered_payload": (tampered(good, sub="someone-else"), "unauthorized", "signature"),
        "no_subject": (issuer.id_token(drop=("sub",)), "unauthorized", "claims"),
        "no_expiry": (issuer.id_token(drop=("exp",)), "unauthorized", "claims"),
        "garbage": ("not.a.jwt", "unauthorized", "malformed"),
    }


FORGERIES = [
    "expired",
    "nbf_in_the_future",
    "wrong_audience",
    "untrusted_issuer",
    "unknown_kid",
    "foreign_key_known_kid",
    "alg_none",
    "hs256_with_public_key",
    "tampered_payload",
    "no_subject",
    "no_expiry",
    "garbage",
]


@pytest.mark.parametrize("name", FORGERIES)
async def test_forged_or_invalid_id_tokens_are_refused(oidc_issuer, oidc_client, name) -> None:
    token, code, words = _forgeries(oidc_issuer)[name]
    answers = [await exchange(oidc_client, token) for _ in range(2)]
    for status, body in answers:
        assert (status, body["error"]["code"]) == (401, code), body
        assert words in body["error"]["message"], body
    assert answers[0] == answers[1]  # deterministic


async def test_issuer_key_rotation_is_picked_up_by_refetch(
    control_settings, fresh_issuer, http, make_client
) -> None:
    settings = dataclasses.replace(
        control_settings,
        dev_idp_enabled=False,
        oidc_issuers=(fresh_issuer.issuer,),
        oidc_jwks_min_refetch_s=0.0,
    )
    async with ControlApp(settings) as app:
        client = make_client(app.base_url, http)
        assert (await exchange(client, fresh_issuer.id_token()))[0] == 200
        fetches = fresh_issuer.jwks_fetches
        fresh_issuer.add_key("ES256")  # the issuer rotates: a new kid signs
        status, body = await exchange(client, fresh_issuer.id_token())
        assert status == 200, body
        assert fresh_issuer.jwks_fetches == fetches + 1
        assert fresh_issuer.discovery_fetches == 1  # the discovery document is cached


async def test_unknown_kid_floods_do_not_hammer_the_issuer(
    control_settings, fresh_issuer, http, make_client
) -> None:
    settings = dataclasses.replace(
        control_settings,
        dev_idp_enabled=False,
        oidc_issuers=(fresh_issuer.issuer,),
        oidc_jwks_min_refetch_s=60.0,
    )
    async with ControlApp(settings) as app:
        client = make_client(app.base_url, http)
        assert (await exchange(client, fresh_issuer.id_token()))[0] == 200
        before = fresh_issuer.jwks_fetches
        outsider = ec.generate_private_key(ec.SECP256R1())
        now = int(time.time())
        for i in range(10):
            forged = jwt.encode(
                {
                    "iss": fresh_issuer.issuer,
                    "aud": "khala-control",
                    "sub": "x",
                    "iat": now,
                    "exp": now + 60,
                },
                outsider,
                algorithm="ES256",
                headers={"kid": f"flood-{i}"},
            )
            status, body = await exchange(client, forged)
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert fresh_issuer.jwks_fetches - before <= 1


async def test_discovery_naming_another_issuer_is_503(
    control_settings, fresh_issuer, http, make_client
) -> None:
    fresh_issuer.claimed_issuer = "https://someone-else.example"
    settings = dataclasses.replace(
        control_settings, dev_idp_enabled=False, oidc_issuers=(fresh_issuer.issuer,)
    )
    async with ControlApp(settings) as app:
        status, body = await exchange(make_client(app.base_url, http), fresh_issuer.id_token())
        assert (status, body["error"]["code"]) == (503, "idp_unavailable")
