"""Device session listing, logout, per-session revoke and revoke-all."""

from __future__ import annotations

import pytest

from openagents.control.v1 import revocation_pb2

pytestmark = pytest.mark.integration


async def test_list_and_revoke_one_session(client, email, revocations) -> None:
    laptop = await client.sign_in(email, device_id="laptop")
    phone = await client.sign_in(email, device_id="phone", surface="ios")
    assert laptop["user_id"] == phone["user_id"]  # same identity, same user

    listed = await client.ok("GET", "/api/auth/sessions", token=laptop["access_token"])
    by_id = {s["session_id"]: s for s in listed["sessions"]}
    assert set(by_id) == {laptop["session_id"], phone["session_id"]}
    assert by_id[laptop["session_id"]]["current"] is True
    assert by_id[phone["session_id"]] | {"current": None} == by_id[phone["session_id"]] | {
        "device_id": "phone",
        "surface": "ios",
        "current": None,
    }

    revoked = await client.ok(
        "DELETE", f"/api/auth/sessions/{phone['session_id']}", token=laptop["access_token"]
    )
    assert revoked == {"session_id": phone["session_id"], "revoked": True}
    message = await revocations.wait_for(phone["session_id"])
    assert revocation_pb2.Revocation.FromString(message.body).reason == "revoked_by_user"

    status, _ = await client.call("GET", "/api/me", token=phone["access_token"])
    assert status == 401
    status, _ = await client.call(
        "POST", "/api/auth/refresh", {"refresh_token": phone["refresh_token"]}
    )
    assert status == 401
    listed = await client.ok("GET", "/api/auth/sessions", token=laptop["access_token"])
    assert [s["session_id"] for s in listed["sessions"]] == [laptop["session_id"]]
    # revoking again is idempotent
    await client.ok(
        "DELETE", f"/api/auth/sessions/{phone['session_id']}", token=laptop["access_token"]
    )


async def test_cannot_revoke_someone_elses_session(client, email) -> None:
    mine = await client.sign_in(email)
    theirs = await client.sign_in(f"other-{email}")
    status, body = await client.call(
        "DELETE", f"/api/auth/sessions/{theirs['session_id']}", token=mine["access_token"]
    )
    assert (status, body["error"]["code"]) == (404, "session_not_found")
    assert (await client.call("GET", "/api/me", token=theirs["access_token"]))[0] == 200


async def test_logout_revokes_only_the_current_session(client, email, revocations) -> None:
    a = await client.sign_in(email, device_id="a")
    b = await client.sign_in(email, device_id="b")
    assert await client.ok("POST", "/api/auth/logout", token=a["access_token"]) == {
        "session_id": a["session_id"],
        "revoked": True,
    }
    message = await revocations.wait_for(a["session_id"])
    assert revocation_pb2.Revocation.FromString(message.body).reason == "logout"
    assert (await client.call("GET", "/api/me", token=a["access_token"]))[0] == 401
    assert (await client.call("GET", "/api/me", token=b["access_token"]))[0] == 200


async def test_revoke_all(client, email, revocations) -> None:
    sessions = [await client.sign_in(email, device_id=f"d{i}") for i in range(3)]
    body = await client.ok(
        "POST", "/api/auth/sessions/revoke-all", token=sessions[0]["access_token"]
    )
    ids = sorted(s["session_id"] for s in sessions)
    assert sorted(body["revoked_session_ids"]) == ids
    message = await revocations.wait_for(ids[0])
    revocation = revocation_pb2.Revocation.FromString(message.body)
    assert sorted(revocation.session_ids) == ids
    assert revocation.reason == "revoke_all"
    for session in sessions:
        assert (await client.call("GET", "/api/me", token=session["access_token"]))[0] == 401
