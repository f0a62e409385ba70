"""Integration (real HTTP, real Postgres): adding a member is an invitation the
invitee accepts, never silent membership. Invitations are for a user id or an email
address, only their invitee sees and decides them, they expire, and invite, accept
and decline are audited under the org."""

from __future__ import annotations

from typing import Any

import pytest

from khala_common.db import create_pool
from khala_control.settings import SCHEMA

pytestmark = pytest.mark.integration


async def _invite(client: Any, org: str, inviter: dict[str, Any], **body: Any) -> tuple[int, Any]:
    return await client.call(
        "POST", f"/api/orgs/{org}/invitations", body, token=inviter["access_token"]
    )


async def _decide(
    client: Any, who: dict[str, Any], invitation_id: str, how: str
) -> tuple[int, Any]:
    return await client.call(
        "POST", f"/api/invitations/{invitation_id}/{how}", token=who["access_token"]
    )


async def _mine(client: Any, who: dict[str, Any]) -> list[dict[str, Any]]:
    return (await client.ok("GET", "/api/invitations", token=who["access_token"]))["invitations"]


async def _orgs(client: Any, who: dict[str, Any]) -> list[tuple[str, str]]:
    me = await client.ok("GET", "/api/me", token=who["access_token"])
    return [(m["org_id"], m["role"]) for m in me["memberships"]]


async def test_membership_starts_only_when_the_invitee_accepts(
    control: Any, client: Any, email: str, unique: str
) -> None:
    owner = await client.sign_in(f"owner-{email}")
    bob = await client.sign_in(f"bob-{email}")
    eve = await client.sign_in(f"eve-{email}")
    org = f"inv-{unique}"
    await client.ok(
        "POST", "/api/orgs", {"org_id": org, "name": "Inv"}, token=owner["access_token"]
    )

    status, invitation = await _invite(client, org, owner, user_id=bob["user_id"], role="member")
    assert status == 201, invitation
    assert invitation["invitation_id"].startswith("inv_")
    assert (invitation["org_id"], invitation["org_name"], invitation["role"]) == (
        org,
        "Inv",
        "member",
    )
    assert (invitation["user_id"], invitation["email"]) == (bob["user_id"], None)
    assert (invitation["status"], invitation["invited_by"]) == ("pending", owner["user_id"])
    assert invitation["expires_at_ms"] > invitation["created_at_ms"]
    # Not a member yet: no membership, no topics.
    assert await _orgs(client, bob) == []
    status, body = await client.call(
        "POST", "/api/sync/token", {"topics": [f"org.{org}.runs"]}, token=bob["access_token"]
    )
    assert (status, body["error"]["code"]) == (403, "forbidden_topic")
    # Only the invitee sees it; the org's owner lists it as pending.
    assert [i["invitation_id"] for i in await _mine(client, bob)] == [invitation["invitation_id"]]
    assert await _mine(client, eve) == []
    pending = await client.ok("GET", f"/api/orgs/{org}/invitations", token=owner["access_token"])
    assert [i["invitation_id"] for i in pending["invitations"]] == [invitation["invitation_id"]]
    # Someone else's invitation answers like one that does not exist.
    for who, invitation_id in ((eve, invitation["invitation_id"]), (bob, "inv_nope")):
        for how in ("accept", "decline"):
            status, body = await _decide(client, who, invitation_id, how)
            assert (status, body["error"]["code"]) == (404, "invitation_not_found")
            assert body["error"]["message"] == f"no invitation {invitation_id!r}"

    status, joined = await _decide(client, bob, invitation["invitation_id"], "accept")
    assert status == 200
    assert joined == {"user_id": bob["user_id"], "org_id": org, "name": "Inv", "role": "member"}
    assert await _orgs(client, bob) == [(org, "member")]
    minted = await client.ok(
        "POST", "/api/sync/token", {"topics": [f"org.{org}.runs"]}, token=bob["access_token"]
    )
    assert minted["scope"] == [f"org.{org}.runs"]
    # Decided: gone from the lists, and cannot be decided again.
    assert await _mine(client, bob) == []
    for how in ("accept", "decline"):
        status, body = await _decide(client, bob, invitation["invitation_id"], how)
        assert (status, body["error"]["code"]) == (409, "invitation_closed")
    # A member is not invited again.
    status, body = await _invite(client, org, owner, user_id=bob["user_id"], role="viewer")
    assert (status, body["error"]["code"]) == (409, "already_member")


async def test_decline_expiry_email_and_who_may_invite(
    control: Any, client: Any, email: str, unique: str
) -> None:
    owner = await client.sign_in(f"owner-{email}")
    admin = await client.sign_in(f"admin-{email}")
    member = await client.sign_in(f"member-{email}")
    carol = await client.sign_in(f"carol-{email}")
    org = f"inw-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "W"}, token=owner["access_token"])
    await client.join(org, owner, admin, "admin")
    await client.join(org, owner, member, "member")

    # Who may invite whom: as for granting the role.
    status, body = await _invite(client, org, member, user_id=carol["user_id"], role="viewer")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await _invite(client, org, admin, user_id=carol["user_id"], role="owner")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await _invite(client, org, carol, user_id=carol["user_id"], role="viewer")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await _invite(client, org, owner, user_id="usr_nobody", role="viewer")
    assert (status, body["error"]["code"]) == (404, "user_not_found")
    status, body = await _invite(
        client, f"none-{unique}", owner, user_id=carol["user_id"], role="viewer"
    )
    assert (status, body["error"]["code"]) == (404, "org_not_found")
    for bad in (
        {"role": "viewer"},
        {"user_id": carol["user_id"], "email": "a@b.co", "role": "viewer"},
    ):
        status, body = await _invite(client, org, owner, **bad)
        assert (status, body["error"]["code"]) == (400, "bad_request"), bad

    # Declined: no membership, and it cannot be accepted afterwards.
    status, first = await _invite(client, org, admin, user_id=carol["user_id"], role="viewer")
    assert status == 201
    status, body = await _decide(client, carol, first["invitation_id"], "decline")
    assert status == 200 and body["status"] == "declined"
    assert await _orgs(client, carol) == []
    status, body = await _decide(client, carol, first["invitation_id"], "accept")
    assert (status, body["error"]["code"]) == (409, "invitation_closed")

    # By email (case-insensitive): the user signed in with that address accepts.
    status, by_email = await _invite(
        client, org, admin, email=f"CAROL-{email}".upper(), role="viewer"
    )
    assert status == 201 and by_email["email"] == f"carol-{email}".lower()
    assert [i["invitation_id"] for i in await _mine(client, carol)] == [by_email["invitation_id"]]
    assert await _mine(client, member) == []

    # Expired: not listed, and refused.
    pool = await create_pool(control.settings.database_url, SCHEMA)
    try:
        await pool.execute(
            "UPDATE invitations SET expires_at = now() - interval '1 second' "
            "WHERE invitation_id = $1",
            by_email["invitation_id"],
        )
    finally:
        await pool.close()
    assert await _mine(client, carol) == []
    status, body = await _decide(client, carol, by_email["invitation_id"], "accept")
    assert (status, body["error"]["code"]) == (410, "invitation_expired")
    assert await _orgs(client, carol) == []

    status, last = await _invite(client, org, admin, email=f"carol-{email}", role="viewer")
    assert (await _decide(client, carol, last["invitation_id"], "accept"))[0] == 200
    assert await _orgs(client, carol) == [(org, "viewer")]

    # Audited under the org: who invited, accepted, declined.
    await control.audit.flush()
    page = await client.ok("GET", f"/api/orgs/{org}/audit?limit=500", token=owner["access_token"])
    trail = [
        (e["action"], e["user_id"], e["detail"].get("invitation_id"))
        for e in reversed(page["entries"])
        if e["action"].startswith("invitation.")
    ]
    assert trail == [
        ("invitation.created", owner["user_id"], trail[0][2]),
        ("invitation.accepted", admin["user_id"], trail[0][2]),
        ("invitation.created", owner["user_id"], trail[2][2]),
        ("invitation.accepted", member["user_id"], trail[2][2]),
        ("invitation.created", admin["user_id"], first["invitation_id"]),
        ("invitation.declined", carol["user_id"], first["invitation_id"]),
        ("invitation.created", admin["user_id"], by_email["invitation_id"]),
        ("invitation.created", admin["user_id"], last["invitation_id"]),
        ("invitation.accepted", carol["user_id"], last["invitation_id"]),
    ]
