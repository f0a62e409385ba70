"""The delivery-spine flow end to end: dev ID token → session → org → sync token."""

from __future__ import annotations

import jwt
import pytest

from khala_common.jwt_verify import JwksCache, TokenVerifier, http_jwks_fetcher
from khala_common.topics import scope_allows
from khala_control.app import ControlApp

pytestmark = pytest.mark.integration


async def audit_actions(control: ControlApp, user_id: str) -> list[tuple[str, dict[str, object]]]:
    import json

    assert control.pool is not None and control.audit is not None
    await control.audit.flush()  # mint entries are buffered (KHALA_AUDIT_FLUSH_MS)
    rows = await control.pool.fetch(
        "SELECT action, detail::text AS detail FROM audit_log WHERE user_id = $1 ORDER BY audit_id",
        user_id,
    )
    return [(row["action"], json.loads(row["detail"])) for row in rows]


async def test_full_flow_mints_a_sync_token_that_verifies(control, client, email, unique) -> None:
    session = await client.sign_in(email, device_id="laptop-1", surface="desktop")
    access = session["access_token"]
    assert session["session_id"].startswith("ses_") and session["user_id"].startswith("usr_")
    assert session["expires_at"].endswith("Z") and session["refresh_token"].startswith("rt_")

    org = f"acme-{unique}"
    created = await client.ok("POST", "/api/orgs", {"org_id": org, "name": "Acme"}, token=access)
    assert created == {"org_id": org, "name": "Acme", "role": "owner"}

    topics = [f"org.{org}.runs", f"org.{org}.run.run_01"]
    minted = await client.ok(
        "POST",
        "/api/sync/token",
        {"topics": topics, "surface": "desktop", "client_version": "1.0.0"},
        token=access,
    )
    assert minted["scope"] == topics
    assert set(minted) >= {"token", "expires_at", "scope", "kid"}

    # Verified the way the gateway does: control's public JWKS over HTTP.
    verifier = TokenVerifier(
        JwksCache(http_jwks_fetcher(f"{control.base_url}/.well-known/jwks.json")),
        issuer=control.issuer,
        audience="khala-gateway",
    )
    claims = await verifier.verify(minted["token"])
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
    assert claims["sub"] == session["user_id"]
    assert claims["sid"] == session["session_id"]
    assert claims["did"] == "laptop-1"
    assert claims["surface"] == "desktop"
    assert claims["scope"] == topics
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"]
    import jwt

    assert jwt.get_unverified_header(minted["token"])["kid"] == minted["kid"]
    assert jwt.get_unverified_header(minted["token"])["alg"] == "ES256"

    # The access token's claims, as docs/architecture.md lists them.
    access_claims = await TokenVerifier(
        JwksCache(http_jwks_fetcher(f"{control.base_url}/.well-known/jwks.json")),
        issuer=control.issuer,
        audience="khala-api",
    ).verify(access)
    assert set(access_claims) == {
        "iss",
        "aud",
        "sub",
        "sid",
        "did",
        "surface",
        "iat",
        "nbf",
        "exp",
        "jti",
    }
    assert access_claims["exp"] - access_claims["iat"] == 900

    me = await client.ok("GET", "/api/me", token=access)
    assert me["user"]["email"] == email
    assert me["memberships"] == [{"org_id": org, "name": "Acme", "role": "owner"}]

    actions = [action for action, _ in await audit_actions(control, session["user_id"])]
    assert actions == ["session.created", "org.created", "sync_token.minted"]


async def test_empty_topics_grant_every_pattern_of_the_surface(client, email, unique) -> None:
    desktop = (await client.sign_in(email, surface="desktop"))["access_token"]
    org = f"o-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "O"}, token=desktop)
    full = await client.ok(
        "POST", "/api/sync/token", {"topics": [], "surface": "desktop"}, token=desktop
    )
    assert full["scope"] == [
        f"org.{org}.runs",
        f"org.{org}.workers",
        f"org.{org}.run.*",
        f"org.{org}.worker.*",
    ]
    assert scope_allows(full["scope"], f"org.{org}.worker.w-7")
    onyx_session = await client.sign_in(email, device_id="glasses", surface="onyx")
    onyx = await client.ok(
        "POST", "/api/sync/token", {"surface": "onyx"}, token=onyx_session["access_token"]
    )
    assert onyx["scope"] == [f"org.{org}.runs"]
    # surface omitted: the session's surface
    default = await client.ok("POST", "/api/sync/token", {}, token=desktop)
    assert default["scope"] == full["scope"]


async def test_forbidden_topic_is_403_naming_it_and_audited(control, client, email, unique) -> None:
    session = await client.sign_in(email, surface="web")
    access = session["access_token"]
    org = f"mine-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "Mine"}, token=access)

    status, body = await client.call(
        "POST",
        "/api/sync/token",
        {"topics": [f"org.{org}.runs", f"org.other-{unique}.runs"], "surface": "web"},
        token=access,
    )
    assert status == 403
    assert body["error"]["code"] == "forbidden_topic"
    assert body["error"]["topic"] == f"org.other-{unique}.runs"
    assert f"org.other-{unique}.runs" in body["error"]["message"]

    # web may not read run events even in its own org
    status, body = await client.call(
        "POST", "/api/sync/token", {"topics": [f"org.{org}.run.r1"], "surface": "web"}, token=access
    )
    assert (status, body["error"]["code"], body["error"]["topic"]) == (
        403,
        "forbidden_topic",
        f"org.{org}.run.r1",
    )

    denials = [
        d for a, d in await audit_actions(control, session["user_id"]) if a == "sync_token.denied"
    ]
    assert [d["topic"] for d in denials] == [f"org.other-{unique}.runs", f"org.{org}.run.r1"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"topics": ["org.x.logs"], "surface": "desktop"}, 400, "invalid_topic"),
        ({"topics": ["org.*.runs"], "surface": "desktop"}, 400, "invalid_topic"),
        ({"topics": "org.x.runs", "surface": "desktop"}, 400, "bad_request"),
        ({"topics": [], "surface": "tv"}, 400, "bad_request"),
        ({"topics": [], "surface": 7}, 400, "bad_request"),
        ({"topics": [], "surface": "ios", "client_version": "1.9.0"}, 426, "upgrade_required"),
        ({"topics": [], "surface": "ios"}, 426, "upgrade_required"),
    ],
)
async def test_sync_token_refusals(client, email, body, status, code) -> None:
    surface = body["surface"] if body["surface"] in ("desktop", "ios") else "desktop"
    access = (await client.sign_in(email, surface=surface))["access_token"]
    got_status, got = await client.call("POST", "/api/sync/token", body, token=access)
    assert (got_status, got["error"]["code"]) == (status, code), got
    if code == "invalid_topic":
        assert got["error"]["topic"] == body["topics"][0]
    if code == "upgrade_required":
        assert got["error"]["minimum_version"] == "2.0.0"
        assert "2.0.0" in got["error"]["message"]


async def test_new_enough_ios_client_is_served(client, email) -> None:
    access = (await client.sign_in(email, surface="ios"))["access_token"]
    minted = await client.ok(
        "POST", "/api/sync/token", {"surface": "ios", "client_version": "2.0.1"}, token=access
    )
    assert minted["scope"] == []


@pytest.mark.parametrize("session_surface", ["web", "desktop", "ios", "onyx"])
async def test_a_sync_token_carries_only_the_sessions_surface(
    control, client, email, session_surface
) -> None:
    session = await client.sign_in(email, surface=session_surface)
    access = session["access_token"]
    for asked in ("web", "desktop", "ios", "onyx"):
        body = {"surface": asked, "client_version": "2.0.0"}
        status, answer = await client.call("POST", "/api/sync/token", body, token=access)
        if asked == session_surface:
            assert status == 200, answer
            claims = jwt.decode(answer["token"], options={"verify_signature": False})
            assert claims["surface"] == session_surface
            continue
        assert (status, answer["error"]["code"]) == (403, "surface_mismatch"), answer
        assert answer["error"]["surface"] == asked
        assert answer["error"]["session_surface"] == session_surface
    denials = [
        d for a, d in await audit_actions(control, session["user_id"]) if a == "sync_token.denied"
    ]
    assert sorted(d["surface"] for d in denials) == sorted(
        s for s in ("web", "desktop", "ios", "onyx") if s != session_surface
    )
    assert {d["code"] for d in denials} == {"surface_mismatch"}


async def test_sync_token_requires_an_access_token(client) -> None:
    status, body = await client.call("POST", "/api/sync/token", {"topics": []})
    assert (status, body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"device_id": "d", "surface": "desktop"}, "bad_request"),  # no id_token
        ({"id_token": "x", "surface": "desktop"}, "bad_request"),  # no device_id
        ({"id_token": "x", "device_id": "d", "surface": "tv"}, "bad_request"),
        ({"id_token": "not-a-jwt", "device_id": "d", "surface": "desktop"}, "unauthorized"),
    ],
)
async def test_sign_in_refusals(client, body, code) -> None:
    status, got = await client.call("POST", "/api/auth/session", body)
    assert got["error"]["code"] == code
    assert status == (401 if code == "unauthorized" else 400)


async def test_not_json_is_bad_request(client, http) -> None:
    async with http.post(f"{client.base_url}/api/auth/session", data=b"{nope") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_request"
