"""Device session listing, logout, per-device revoke and revoke-all: the
routing key and body of each revocation, and that IntrospectSession (what
runtime asks) reports the session inactive at once."""

from __future__ import annotations

import grpc
import pytest

from khala_common.grpc_server import insecure_channel, service_metadata
from openagents.control.v1 import control_service_pb2 as pb
from openagents.control.v1 import control_service_pb2_grpc, revocation_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
async def introspect(control):
    channel = insecure_channel(f"127.0.0.1:{control.grpc_port}")
    stub = control_service_pb2_grpc.ControlServiceStub(channel)

    async def call(session_id: str) -> pb.IntrospectSessionResponse:
        return await stub.IntrospectSession(
            pb.IntrospectSessionRequest(session_id=session_id),
            metadata=service_metadata("test-service-token"),
        )

    try:
        yield call
    finally:
        await channel.close()


def body(message) -> revocation_pb2.Revocation:
    return revocation_pb2.Revocation.FromString(message.body)


async def test_list_and_revoke_a_device(client, email, revocations, introspect) -> None:
    laptop = await client.sign_in(email, device_id="laptop")
    phone = await client.sign_in(email, device_id="phone", surface="ios")
    phone_again = await client.sign_in(email, device_id="phone", surface="ios")
    assert laptop["user_id"] == phone["user_id"]  # same identity, same user

    listed = await client.ok("GET", "/api/auth/sessions", token=laptop["access_token"])
    by_id = {s["session_id"]: s for s in listed["sessions"]}
    assert set(by_id) == {laptop["session_id"], phone["session_id"], phone_again["session_id"]}
    assert by_id[laptop["session_id"]]["current"] is True
    assert by_id[phone["session_id"]]["current"] is False
    assert (by_id[phone["session_id"]]["device_id"], by_id[phone["session_id"]]["surface"]) == (
        "phone",
        "ios",
    )

    revoked = await client.ok(
        "DELETE", f"/api/auth/sessions/{phone['session_id']}", token=laptop["access_token"]
    )
    phone_ids = sorted([phone["session_id"], phone_again["session_id"]])
    assert revoked == {
        "session_id": phone["session_id"],
        "device_id": "phone",
        "revoked": True,
        "revoked_session_ids": phone_ids,
    }
    # Runtime's view flips at once: IntrospectSession reads Postgres, no cache in control.
    for session_id in phone_ids:
        assert not (await introspect(session_id)).active
    assert (await introspect(laptop["session_id"])).active

    message = await revocations.wait_for(phone["session_id"])
    assert message.routing_key == "device.revoked"
    revocation = body(message)
    assert revocation.kind == revocation_pb2.REVOCATION_KIND_DEVICE
    assert sorted(revocation.session_ids) == phone_ids
    assert (revocation.user_id, revocation.device_id) == (phone["user_id"], "phone")
    assert revocation.reason == "revoked_by_user"

    for session in (phone, phone_again):
        assert (await client.call("GET", "/api/me", token=session["access_token"]))[0] == 401
        status, _ = await client.call(
            "POST", "/api/auth/refresh", {"refresh_token": session["refresh_token"]}
        )
        assert status == 401
    listed = await client.ok("GET", "/api/auth/sessions", token=laptop["access_token"])
    assert [s["session_id"] for s in listed["sessions"]] == [laptop["session_id"]]
    # revoking again is idempotent: it leaves a newer sign-in on that device alone
    phone_later = await client.sign_in(email, device_id="phone", surface="ios")
    again = await client.ok(
        "DELETE", f"/api/auth/sessions/{phone['session_id']}", token=laptop["access_token"]
    )
    assert again["revoked_session_ids"] == []
    assert (await introspect(phone_later["session_id"])).active


async def test_cannot_revoke_someone_elses_session(client, email) -> None:
    mine = await client.sign_in(email)
    theirs = await client.sign_in(f"other-{email}")
    for target in (theirs["session_id"], "ses_does_not_exist"):
        status, got = await client.call(
            "DELETE", f"/api/auth/sessions/{target}", token=mine["access_token"]
        )
        assert (status, got["error"]["code"]) == (404, "session_not_found")
    assert (await client.call("GET", "/api/me", token=theirs["access_token"]))[0] == 200


async def test_logout_revokes_only_the_current_session(
    client, email, revocations, introspect
) -> None:
    a = await client.sign_in(email, device_id="same-device")
    b = await client.sign_in(email, device_id="same-device")
    assert await client.ok("POST", "/api/auth/logout", token=a["access_token"]) == {
        "session_id": a["session_id"],
        "revoked": True,
    }
    assert not (await introspect(a["session_id"])).active
    message = await revocations.wait_for(a["session_id"])
    assert message.routing_key == "session.revoked"
    revocation = body(message)
    assert revocation.kind == revocation_pb2.REVOCATION_KIND_SESSION
    assert list(revocation.session_ids) == [a["session_id"]]
    assert (revocation.device_id, revocation.reason) == ("same-device", "logout")
    assert (await client.call("GET", "/api/me", token=a["access_token"]))[0] == 401
    assert (await client.call("GET", "/api/me", token=b["access_token"]))[0] == 200
    assert (await introspect(b["session_id"])).active


async def test_revoke_all(client, email, revocations, introspect) -> None:
    sessions = [await client.sign_in(email, device_id=f"d{i}") for i in range(3)]
    other = await client.sign_in(f"bystander-{email}")
    answer = await client.ok(
        "POST", "/api/auth/sessions/revoke-all", token=sessions[0]["access_token"]
    )
    ids = sorted(s["session_id"] for s in sessions)
    assert sorted(answer["revoked_session_ids"]) == ids
    for session_id in ids:
        assert not (await introspect(session_id)).active
    message = await revocations.wait_for(ids[0])
    assert message.routing_key == "user.revoked"
    revocation = body(message)
    assert revocation.kind == revocation_pb2.REVOCATION_KIND_USER
    assert sorted(revocation.session_ids) == ids
    assert revocation.user_id == sessions[0]["user_id"]
    assert revocation.device_id == ""  # several devices
    assert revocation.reason == "revoke_all"
    for session in sessions:
        assert (await client.call("GET", "/api/me", token=session["access_token"]))[0] == 401
    assert (await client.call("GET", "/api/me", token=other["access_token"]))[0] == 200


async def test_introspect_requires_the_service_credential(control, client, email) -> None:
    session = await client.sign_in(email)
    channel = insecure_channel(f"127.0.0.1:{control.grpc_port}")
    try:
        stub = control_service_pb2_grpc.ControlServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.IntrospectSession(
                pb.IntrospectSessionRequest(session_id=session["session_id"])
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()
