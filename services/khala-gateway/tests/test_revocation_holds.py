"""Integration: a revoked session's tokens are refused at Hello and RefreshAuth
(reauth_required, 4009), whether the revocation arrived on `khala.control`,
was listed by control at start, or was published while the broker was away."""

from __future__ import annotations

import time

import pytest
from gateway_testkit import Client, Issuer, gateway_settings, wait_for

from khala_common.broker import Broker
from khala_common.topology import Topology
from khala_gateway.app import GatewayServer
from openagents.control.v1 import control_service_pb2, revocation_pb2
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration


async def revoke_on_broker(broker: Broker, session_id: str) -> None:
    revocation = revocation_pb2.Revocation(
        kind=revocation_pb2.REVOCATION_KIND_SESSION,
        session_ids=[session_id],
        revoked_at_ms=int(time.time() * 1000),
        reason="logout",
    )
    await broker.publish(
        broker.topology.control, "session.revoked", revocation, message_id=f"rev-{session_id}"
    )


async def expect_refused(client: Client, token: str) -> None:
    await client.send(ws_pb2.ClientMessage(hello=ws_pb2.Hello(token=token, client_version="1.0.0")))
    error = await client.expect("error")
    assert error.code == "reauth_required"
    assert await client.expect_close() == 4009


async def refused_hello(connect, server: GatewayServer, token: str) -> bool:
    """Whether a Hello with `token` is refused with reauth_required / 4009 (else welcomed)."""
    client: Client = await connect(server)
    await client.send(ws_pb2.ClientMessage(hello=ws_pb2.Hello(token=token, client_version="1.0.0")))
    reply = await client.recv()
    if reply.WhichOneof("body") == "welcome":
        await client.ws.close()
        return False
    assert reply.error.code == "reauth_required"
    assert await client.expect_close() == 4009
    return True


async def test_a_revoked_sessions_unexpired_token_no_longer_opens_a_socket(
    gateway: GatewayServer, issuer: Issuer, connect, broker: Broker, unique: str
) -> None:
    scope = [f"org.{unique}.runs"]
    token = issuer.mint(scope, sid=f"gone-{unique}")
    welcomed: Client = await connect(gateway)
    await welcomed.hello(token)  # live before the revocation

    await revoke_on_broker(broker, f"gone-{unique}")
    assert (await welcomed.expect("error")).code == "reauth_required"
    assert await welcomed.expect_close() == 4009
    # The same, still unexpired token is refused from now on, and so is any other
    # token of that session; another session of the same user is not affected.
    await expect_refused(await connect(gateway), token)
    await expect_refused(await connect(gateway), issuer.mint(scope, sid=f"gone-{unique}"))
    other: Client = await connect(gateway)
    await other.hello(issuer.mint(scope, sid=f"kept-{unique}"))


async def test_refresh_auth_with_a_revoked_sessions_token_closes_4009(
    gateway: GatewayServer, issuer: Issuer, connect, broker: Broker, unique: str
) -> None:
    scope = [f"org.{unique}.runs"]
    await revoke_on_broker(broker, f"gone-{unique}")
    client: Client = await connect(gateway)
    await client.hello(issuer.mint(scope, sid=f"kept-{unique}"))
    await wait_for(lambda: f"gone-{unique}" in gateway.gateway.revoked)
    revoked_token = issuer.mint(scope, sid=f"gone-{unique}")
    await client.send(ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=revoked_token)))
    assert (await client.expect("error")).code == "reauth_required"
    assert await client.expect_close() == 4009


async def test_a_starting_gateway_loads_the_revocations_it_did_not_hear(
    make_gateway, issuer: Issuer, connect, unique: str
) -> None:
    now_ms = int(time.time() * 1000)
    issuer.revoked.append(
        control_service_pb2.RevokedSession(
            session_id=f"before-start-{unique}",
            revoked_at_ms=now_ms,
            refuse_until_ms=now_ms + 600_000,
        )
    )
    async with make_gateway() as server:
        assert server.gateway.revocation_sync is not None
        assert server.gateway.revocation_sync.synced.is_set()  # loaded before listening
        token = issuer.mint([f"org.{unique}.runs"], sid=f"before-start-{unique}")
        assert await refused_hello(connect, server, token)


async def test_after_a_broker_reconnect_the_gateway_reloads_from_control(
    khala_dsn: str, topology: Topology, issuer: Issuer, connect, amqp_url: str, unique: str
) -> None:
    # Reconnect quickly so the test does not wait out aio-pika's 5 s default.
    quick = f"{amqp_url.rstrip('/')}/?reconnect_interval=0.2"
    server = GatewayServer(gateway_settings(khala_dsn, quick, topology, issuer))
    await server.start()
    try:
        sync = server.gateway.revocation_sync
        assert sync is not None
        loads = sync.loads
        token = issuer.mint([f"org.{unique}.runs"], sid=f"while-away-{unique}")
        assert not await refused_hello(connect, server, token)

        # Revoked while this gateway's broker connection is down (it hears
        # nothing on khala.control), then the connection comes back.
        now_ms = int(time.time() * 1000)
        issuer.revoked.append(
            control_service_pb2.RevokedSession(
                session_id=f"while-away-{unique}",
                revoked_at_ms=now_ms,
                refuse_until_ms=now_ms + 600_000,
            )
        )
        connection = server.gateway.broker._connection  # the robust aio-pika connection
        assert connection is not None and connection.transport is not None
        await connection.transport.connection.close(ConnectionError("network lost"))
        await wait_for(lambda: sync.loads > loads, within=15.0)
        assert await refused_hello(connect, server, token)
    finally:
        await server.stop()
