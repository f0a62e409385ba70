"""Identity providers: the dev IdP switch, generic OIDC issuers, discovery."""

from __future__ import annotations

import dataclasses
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from khala_control.app import ControlApp

pytestmark = pytest.mark.integration


async def test_discovery_and_stable_subject(control, client, email) -> None:
    issuer = f"{control.issuer}/dev-idp"
    discovery = await client.ok("GET", "/dev-idp/.well-known/openid-configuration")
    assert discovery["issuer"] == issuer
    assert discovery["jwks_uri"] == f"{issuer}/jwks.json"
    id_token = (await client.ok("POST", "/api/dev/id-token", {"email": email, "name": "Ada"}))[
        "id_token"
    ]
    claims = jwt.decode(id_token, options={"verify_signature": False})
    assert claims["iss"] == issuer and claims["aud"] == "khala-control"
    again = jwt.decode(
        (await client.ok("POST", "/api/dev/id-token", {"email": email.upper()}))["id_token"],
        options={"verify_signature": False},
    )
    assert again["sub"] == claims["sub"]
    first = await client.sign_in(email)
    second = await client.sign_in(email.upper())
    assert first["user_id"] == second["user_id"]


@pytest.mark.parametrize(
    "body", [{}, {"email": "nope"}, {"email": 3}, {"email": "a@b.c", "name": 5}]
)
async def test_dev_id_token_validation(client, body) -> None:
    status, got = await client.call("POST", "/api/dev/id-token", body)
    assert (status, got["error"]["code"]) == (400, "bad_request")


async def test_dev_idp_is_off_unless_enabled(
    control, control_settings, http, make_client, email
) -> None:
    foreign_token = (
        await make_client(control.base_url, http).ok("POST", "/api/dev/id-token", {"email": email})
    )["id_token"]
    settings = dataclasses.replace(control_settings, dev_idp_enabled=False)
    async with ControlApp(settings) as closed:
        client = make_client(closed.base_url, http)
        for method, path in [
            ("POST", "/api/dev/id-token"),
            ("GET", "/dev-idp/.well-known/openid-configuration"),
            ("GET", "/dev-idp/jwks.json"),
        ]:
            status, body = await client.call(method, path, {"email": email})
            assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await client.call(
            "POST",
            "/api/auth/session",
            {"id_token": foreign_token, "device_id": "d", "surface": "web"},
        )
        assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_external_oidc_issuer(control, control_settings, http, make_client, email) -> None:
    """Another control's dev IdP stands in for an external provider (WorkOS, …)."""
    external = f"{control.issuer}/dev-idp"
    id_token = (
        await make_client(control.base_url, http).ok("POST", "/api/dev/id-token", {"email": email})
    )["id_token"]
    trusting = dataclasses.replace(
        control_settings, dev_idp_enabled=False, oidc_issuers=(external,)
    )
    async with ControlApp(trusting) as app:
        session = await make_client(app.base_url, http).ok(
            "POST",
            "/api/auth/session",
            {"id_token": id_token, "device_id": "d", "surface": "web", "client_version": "1"},
        )
        assert session["user_id"].startswith("usr_")
    other_audience = dataclasses.replace(trusting, oidc_audience="some-other-client")
    async with ControlApp(other_audience) as app:
        status, body = await make_client(app.base_url, http).call(
            "POST", "/api/auth/session", {"id_token": id_token, "device_id": "d", "surface": "web"}
        )
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert "audience" in body["error"]["message"]


async def test_unreachable_issuer_is_503(control_settings, http, make_client) -> None:
    issuer = "http://127.0.0.1:9"  # discard port: nothing listens
    settings = dataclasses.replace(control_settings, dev_idp_enabled=False, oidc_issuers=(issuer,))
    now = int(time.time())
    token = jwt.encode(
        {"iss": issuer, "aud": "khala-control", "sub": "s", "iat": now, "exp": now + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "k"},
    )
    async with ControlApp(settings) as app:
        status, body = await make_client(app.base_url, http).call(
            "POST", "/api/auth/session", {"id_token": token, "device_id": "d", "surface": "web"}
        )
        assert (status, body["error"]["code"]) == (503, "idp_unavailable")


async def test_expired_id_token_is_refused(control, client) -> None:
    now = int(time.time())
    issuer = f"{control.issuer}/dev-idp"
    # Signed by a key the dev issuer does not publish: refused, never a 5xx.
    token = jwt.encode(
        {"iss": issuer, "aud": "khala-control", "sub": "s", "iat": now - 7200, "exp": now - 3600},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "unknown"},
    )
    status, body = await client.call(
        "POST", "/api/auth/session", {"id_token": token, "device_id": "d", "surface": "web"}
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")
