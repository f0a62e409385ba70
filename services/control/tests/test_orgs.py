"""Orgs and memberships over HTTP."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_create_org_validation_and_conflict(client, email, unique) -> None:
    access = (await client.sign_in(email))["access_token"]
    org = f"Org_{unique}-x"
    assert (await client.call("POST", "/api/orgs", {"org_id": org, "name": "X"}, token=access))[
        0
    ] == 201
    status, body = await client.call(
        "POST", "/api/orgs", {"org_id": org, "name": "Y"}, token=access
    )
    assert (status, body["error"]["code"]) == (409, "org_exists")
    for bad in ("a.b", "a b", "x" * 65, "ünï", "*"):
        status, body = await client.call(
            "POST", "/api/orgs", {"org_id": bad, "name": "B"}, token=access
        )
        assert (status, body["error"]["code"]) == (400, "bad_request"), bad
    status, body = await client.call("POST", "/api/orgs", {"org_id": f"n-{unique}"}, token=access)
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, _ = await client.call("POST", "/api/orgs", {"org_id": f"u-{unique}", "name": "U"})
    assert status == 401


async def test_membership_lifecycle(client, email, unique) -> None:
    owner = await client.sign_in(f"owner-{email}")
    bob = await client.sign_in(f"bob-{email}")
    carol = await client.sign_in(f"carol-{email}")
    org = f"team-{unique}"
    members = f"/api/orgs/{org}/members"
    await client.ok(
        "POST", "/api/orgs", {"org_id": org, "name": "Team"}, token=owner["access_token"]
    )

    async def put(actor, target, role):
        return await client.call(
            "PUT", f"{members}/{target['user_id']}", {"role": role}, token=actor["access_token"]
        )

    async def delete(actor, target):
        return await client.call(
            "DELETE", f"{members}/{target['user_id']}", token=actor["access_token"]
        )

    status, body = await put(owner, bob, "member")  # no silent membership: invite first
    assert (status, body["error"]["code"]) == (409, "not_a_member")
    body = await client.join(org, owner, bob, "member")
    assert body == {
        "user_id": bob["user_id"],
        "org_id": org,
        "name": "Team",
        "role": "member",
    }
    me = await client.ok("GET", "/api/me", token=bob["access_token"])
    assert me["memberships"] == [{"org_id": org, "name": "Team", "role": "member"}]
    # membership reaches the sync scope at once
    minted = await client.ok(
        "POST", "/api/sync/token", {"topics": [f"org.{org}.runs"]}, token=bob["access_token"]
    )
    assert minted["scope"] == [f"org.{org}.runs"]

    assert (await put(bob, carol, "viewer"))[1]["error"][
        "code"
    ] == "forbidden"  # members manage nobody
    assert (await put(owner, bob, "admin"))[0] == 200
    status, body = await put(bob, carol, "owner")  # admins cannot grant owner
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert (await client.join(org, bob, carol, "viewer"))["role"] == "viewer"
    assert (await put(bob, owner, "member"))[1]["error"]["code"] == "forbidden"  # nor touch owners

    status, body = await delete(owner, owner)
    assert (status, body["error"]["code"]) == (409, "last_owner")
    status, body = await put(owner, owner, "admin")
    assert (status, body["error"]["code"]) == (409, "last_owner")

    status, body = await put(owner, bob, "superuser")
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = await client.call(
        "PUT", f"{members}/usr_nobody", {"role": "member"}, token=owner["access_token"]
    )
    assert (status, body["error"]["code"]) == (404, "user_not_found")
    status, body = await client.call(
        "PUT",
        f"/api/orgs/none-{unique}/members/{bob['user_id']}",
        {"role": "member"},
        token=owner["access_token"],
    )
    assert (status, body["error"]["code"]) == (404, "org_not_found")

    assert (await delete(carol, carol))[0] == 200  # a viewer may leave
    status, body = await delete(owner, carol)
    assert (status, body["error"]["code"]) == (404, "member_not_found")

    assert (await put(owner, bob, "owner"))[0] == 200
    status, body = await delete(owner, owner)  # no longer the last owner
    assert status == 200 and body == {"org_id": org, "user_id": owner["user_id"], "removed": True}
    assert (await client.ok("GET", "/api/me", token=owner["access_token"]))["memberships"] == []
    status, body = await client.call(
        "POST", "/api/sync/token", {"topics": [f"org.{org}.runs"]}, token=owner["access_token"]
    )
    assert (status, body["error"]["code"]) == (403, "forbidden_topic")


async def test_members_are_listed_to_members_only(client, email, unique) -> None:
    owner = await client.sign_in(f"owner-{email}")
    viewer = await client.sign_in(f"viewer-{email}")
    stranger = await client.sign_in(f"stranger-{email}")
    org = f"list-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "L"}, token=owner["access_token"])
    await client.join(org, owner, viewer, "viewer")
    listed = await client.ok("GET", f"/api/orgs/{org}/members", token=viewer["access_token"])
    assert listed["org_id"] == org
    assert [(m["user_id"], m["role"], m["email"]) for m in listed["members"]] == [
        (owner["user_id"], "owner", f"owner-{email}"),
        (viewer["user_id"], "viewer", f"viewer-{email}"),
    ]
    status, body = await client.call(
        "GET", f"/api/orgs/{org}/members", token=stranger["access_token"]
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await client.call(
        "GET", f"/api/orgs/nope-{unique}/members", token=owner["access_token"]
    )
    assert (status, body["error"]["code"]) == (404, "org_not_found")
