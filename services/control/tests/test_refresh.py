"""Refresh token rotation and reuse detection."""

from __future__ import annotations

import aio_pika
import pytest

from khala_common.topology import CONTENT_TYPE, TYPE_HEADER
from openagents.control.v1 import revocation_pb2

pytestmark = pytest.mark.integration


async def test_refresh_rotates_and_each_token_is_single_use(client, email) -> None:
    first = await client.sign_in(email)
    second = await client.ok("POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second["session_id"] == first["session_id"]
    assert second["user_id"] == first["user_id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    third = await client.ok("POST", "/api/auth/refresh", {"refresh_token": second["refresh_token"]})
    me = await client.ok("GET", "/api/me", token=third["access_token"])
    assert me["session"]["session_id"] == first["session_id"]


async def test_reuse_revokes_the_session_and_publishes_a_revocation(
    control, client, email, revocations
) -> None:
    first = await client.sign_in(email, device_id="phone-9")
    second = await client.ok("POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]})

    status, body = await client.call(
        "POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert "revoked" in body["error"]["message"]

    # The whole session is gone: its newest refresh token and its access tokens too.
    status, body = await client.call(
        "POST", "/api/auth/refresh", {"refresh_token": second["refresh_token"]}
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    for access in (first["access_token"], second["access_token"]):
        status, body = await client.call("GET", "/api/me", token=access)
        assert (status, body["error"]["code"]) == (401, "unauthorized")

    message = await revocations.wait_for(first["session_id"])
    assert message.routing_key == "session.revoked"
    assert message.message_id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == CONTENT_TYPE
    assert message.headers[TYPE_HEADER] == "openagents.control.v1.Revocation"
    revocation = revocation_pb2.Revocation.FromString(message.body)
    assert revocation.kind == revocation_pb2.REVOCATION_KIND_SESSION
    assert list(revocation.session_ids) == [first["session_id"]]
    assert revocation.user_id == first["user_id"]
    assert revocation.device_id == "phone-9"
    assert revocation.reason == "refresh_token_reuse"
    assert revocation.revoked_at_ms > 0

    assert control.pool is not None and control.audit is not None
    await control.audit.flush()
    actions = await control.pool.fetch(
        "SELECT action, detail->>'code' AS code FROM audit_log WHERE session_id = $1 "
        "ORDER BY audit_id",
        first["session_id"],
    )
    assert [(row["action"], row["code"]) for row in actions] == [
        ("session.created", None),
        ("session.revoked", None),
        ("refresh_token.reused", None),
        ("refresh_token.denied", "unauthorized"),  # the newest token, after the revocation
    ]


async def test_unknown_or_malformed_refresh_tokens(client) -> None:
    status, body = await client.call("POST", "/api/auth/refresh", {"refresh_token": "rt_nope"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await client.call("POST", "/api/auth/refresh", {"refresh_token": 12})
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = await client.call("POST", "/api/auth/refresh", {})
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_refresh_tokens_are_stored_hashed(control, client, email) -> None:
    session = await client.sign_in(email)
    assert control.pool is not None
    stored = await control.pool.fetch(
        "SELECT token_hash FROM refresh_tokens WHERE session_id = $1", session["session_id"]
    )
    assert len(stored) == 1
    assert session["refresh_token"].encode() not in bytes(stored[0]["token_hash"])
    import hashlib

    assert (
        bytes(stored[0]["token_hash"]) == hashlib.sha256(session["refresh_token"].encode()).digest()
    )
