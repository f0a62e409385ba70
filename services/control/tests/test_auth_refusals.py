"""Security matrix of control's own endpoints: forged, expired, premature,
misdirected and tampered access tokens are refused with a deterministic code
(and a WWW-Authenticate challenge) on every authenticated route; another
org's topic is a 403 naming it."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from control_testkit import alg_none, hs256_with_secret, parts, tampered
from cryptography.hazmat.primitives.asymmetric import ec

from khala_control.domain.tokens import access_claims

pytestmark = pytest.mark.integration

ROUTES = [
    ("GET", "/api/me", None),
    ("POST", "/api/sync/token", {"topics": []}),
    ("GET", "/api/auth/sessions", None),
]


async def forgeries(client, control, email: str) -> dict[str, tuple[str, str, str]]:
    """name → (token, expected code, words of the message)."""
    session = await client.sign_in(email)
    good = session["access_token"]
    header, claims, _ = parts(good)
    base: dict[str, Any] = dict(
        user_id=session["user_id"],
        session_id=session["session_id"],
        device_id="laptop",
        surface="desktop",
        jti="forged",
    )
    now = int(time.time())

    async def signed(**overrides: Any) -> str:
        token, _ = await control.keyring.sign({**access_claims(**base), **overrides})
        return str(token)

    base_claims = dict(issuer=control.issuer, now=now, ttl_s=60)
    base.update(base_claims)
    public = json.dumps((await control.keyring.jwks())["keys"][0]).encode()
    outsider = ec.generate_private_key(ec.SECP256R1())
    sync = await client.ok("POST", "/api/sync/token", {"topics": []}, token=good)
    return {
        "alg_none": (alg_none(good), "unauthorized", "not allowed"),
        "hs256_signed_with_the_public_key": (
            hs256_with_secret(good, public),
            "unauthorized",
            "not allowed",
        ),
        "expired": (
            await signed(iat=now - 3600, nbf=now - 3600, exp=now - 1800),
            "token_expired",
            "expired",
        ),
        "nbf_in_the_future": (await signed(nbf=now + 600), "unauthorized", "not yet valid"),
        "wrong_audience_sync_token": (sync["token"], "unauthorized", "audience"),
        "wrong_issuer": (await signed(iss="https://evil.example"), "unauthorized", "issuer"),
        "unknown_kid": (
            jwt.encode(claims, outsider, algorithm="ES256", headers={"kid": "no-such-kid"}),
            "unauthorized",
            "unknown kid",
        ),
        "foreign_key_with_a_known_kid": (
            jwt.encode(claims, outsider, algorithm="ES256", headers={"kid": header["kid"]}),
            "unauthorized",
            "signature",
        ),
        "tampered_payload": (tampered(good, surface="web", jti="x"), "unauthorized", "signature"),
        "missing_session_claim": (await signed(sid=None), "unauthorized", "claims"),
        "garbage": ("a.b.c", "unauthorized", "malformed"),
    }


CASES = [
    "alg_none",
    "hs256_signed_with_the_public_key",
    "expired",
    "nbf_in_the_future",
    "wrong_audience_sync_token",
    "wrong_issuer",
    "unknown_kid",
    "foreign_key_with_a_known_kid",
    "tampered_payload",
    "missing_session_claim",
    "garbage",
]


@pytest.mark.parametrize("case", CASES)
async def test_refused_on_every_route(client, control, http, email, case) -> None:
    token, code, words = (await forgeries(client, control, email))[case]
    answers = []
    for method, path, body in ROUTES:
        async with http.request(
            method, client.base_url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            payload = await response.json()
            assert (response.status, payload["error"]["code"]) == (401, code), (path, payload)
            assert words in payload["error"]["message"], payload
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="khala-control", error="invalid_token"')
            answers.append(payload["error"]["message"])
    assert len(set(answers)) == 1  # the same token gets the same answer everywhere


async def test_valid_token_is_accepted(client, email) -> None:
    access = (await client.sign_in(email))["access_token"]
    assert (await client.call("GET", "/api/me", token=access))[0] == 200


async def test_another_orgs_topic_is_forbidden(client, email, unique) -> None:
    mine = (await client.sign_in(email))["access_token"]
    theirs = (await client.sign_in(f"other-{email}"))["access_token"]
    await client.ok("POST", "/api/orgs", {"org_id": f"mine-{unique}", "name": "M"}, token=mine)
    await client.ok("POST", "/api/orgs", {"org_id": f"theirs-{unique}", "name": "T"}, token=theirs)
    for topic in (f"org.theirs-{unique}.runs", f"org.theirs-{unique}.run.r1"):
        for _ in range(2):
            status, body = await client.call(
                "POST",
                "/api/sync/token",
                {"topics": [f"org.mine-{unique}.runs", topic], "surface": "desktop"},
                token=mine,
            )
            assert (status, body["error"]["code"], body["error"]["topic"]) == (
                403,
                "forbidden_topic",
                topic,
            )


async def test_missing_or_garbage_credentials(client, http) -> None:
    async with http.get(f"{client.base_url}/api/me") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="khala-control"'
    async with http.get(
        f"{client.base_url}/api/me", headers={"Authorization": "Basic abc"}
    ) as response:
        assert response.status == 401


async def test_id_token_with_wrong_audience_or_issuer_cannot_sign_in(client, email) -> None:
    # An access token is an ES256 JWT from a real key, but not from a trusted identity issuer.
    access = (await client.sign_in(email))["access_token"]
    status, body = await client.call(
        "POST", "/api/auth/session", {"id_token": access, "device_id": "d", "surface": "desktop"}
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert "not trusted" in body["error"]["message"]
    id_token = (await client.ok("POST", "/api/dev/id-token", {"email": email}))["id_token"]
    status, body = await client.call("GET", "/api/me", token=id_token)  # wrong audience
    assert (status, body["error"]["code"]) == (401, "unauthorized")
