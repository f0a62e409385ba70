"""gRPC ControlService over a real channel, with and without the service credential."""

from __future__ import annotations

import json

import grpc
import pytest

from khala_common.grpc_server import insecure_channel, service_metadata
from openagents.control.v1 import control_service_pb2 as pb
from openagents.control.v1 import control_service_pb2_grpc

pytestmark = pytest.mark.integration
CREDENTIAL = service_metadata("test-service-token")


@pytest.fixture
async def stub(control):
    channel = insecure_channel(f"127.0.0.1:{control.grpc_port}")
    try:
        yield control_service_pb2_grpc.ControlServiceStub(channel)
    finally:
        await channel.close()


async def test_introspect_session(stub, client, email, unique) -> None:
    session = await client.sign_in(email, device_id="desk-1")
    await client.ok(
        "POST", "/api/orgs", {"org_id": f"g-{unique}", "name": "G"}, token=session["access_token"]
    )

    reply = await stub.IntrospectSession(
        pb.IntrospectSessionRequest(session_id=session["session_id"]), metadata=CREDENTIAL
    )
    assert reply.active
    assert reply.session_id == session["session_id"]
    assert reply.user_id == session["user_id"]
    assert reply.device_id == "desk-1"
    assert [(m.org_id, m.role) for m in reply.memberships] == [(f"g-{unique}", pb.ROLE_OWNER)]

    await client.ok("POST", "/api/auth/logout", token=session["access_token"])
    reply = await stub.IntrospectSession(
        pb.IntrospectSessionRequest(session_id=session["session_id"]), metadata=CREDENTIAL
    )
    assert not reply.active and reply.user_id == session["user_id"] and not reply.memberships

    reply = await stub.IntrospectSession(
        pb.IntrospectSessionRequest(session_id="ses_unknown"), metadata=CREDENTIAL
    )
    assert not reply.active and reply.user_id == ""


async def test_calls_without_the_service_credential_are_refused(stub, client, email) -> None:
    session = await client.sign_in(email)
    request = pb.IntrospectSessionRequest(session_id=session["session_id"])
    for metadata in (None, service_metadata("wrong-token")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.IntrospectSession(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJwks(pb.GetJwksRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_empty_session_id_is_invalid(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IntrospectSession(pb.IntrospectSessionRequest(), metadata=CREDENTIAL)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_jwks_matches_http(stub, client) -> None:
    reply = await stub.GetJwks(pb.GetJwksRequest(), metadata=CREDENTIAL)
    assert json.loads(reply.jwks_json) == await client.ok("GET", "/.well-known/jwks.json")


async def test_check_topic_access(stub, client, email, unique) -> None:
    session = await client.sign_in(email)
    org = f"c-{unique}"
    await client.ok(
        "POST", "/api/orgs", {"org_id": org, "name": "C"}, token=session["access_token"]
    )

    async def check(surface: str, topic: str) -> pb.CheckTopicAccessResponse:
        request = pb.CheckTopicAccessRequest(
            user_id=session["user_id"], surface=surface, topic=topic
        )
        return await stub.CheckTopicAccess(request, metadata=CREDENTIAL)

    allowed = await check("desktop", f"org.{org}.run.r1")
    assert allowed.allowed and allowed.reason == ""
    for surface, topic, code in [
        ("web", f"org.{org}.run.r1", "forbidden_topic"),
        ("desktop", f"org.not-{unique}.runs", "forbidden_topic"),
        ("desktop", "org.x.bogus", "invalid_topic"),
        ("tv", f"org.{org}.runs", "bad_request"),
    ]:
        reply = await check(surface, topic)
        assert not reply.allowed and reply.reason.startswith(f"{code}:"), reply


async def test_list_revoked_sessions_names_each_revoked_session_until_its_tokens_die(
    stub, client, email
) -> None:
    kept = await client.sign_in(email, device_id="kept")
    gone = await client.sign_in(email, device_id="gone")
    await client.ok("POST", "/api/auth/logout", token=gone["access_token"])

    reply = await stub.ListRevokedSessions(pb.ListRevokedSessionsRequest(), metadata=CREDENTIAL)
    listed = {s.session_id: s for s in reply.sessions}
    assert gone["session_id"] in listed
    assert kept["session_id"] not in listed
    entry = listed[gone["session_id"]]
    assert entry.revoked_at_ms <= reply.as_of_ms
    # access tokens live 900 s by default, sync tokens 300 s; plus 60 s of skew
    assert entry.refuse_until_ms - entry.revoked_at_ms == (900 + 60) * 1000

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListRevokedSessions(pb.ListRevokedSessionsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
