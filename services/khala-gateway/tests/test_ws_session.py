"""Integration: upgrade, Hello, tokens, heartbeats and inbound limits on a real gateway."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from gateway_testkit import Client, Issuer

from khala_gateway.app import GatewayServer
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration


def scope(org: str) -> list[str]:
    return [f"org.{org}.*", f"org.{org}.run.*"]


@pytest.mark.parametrize("json_mode", [False, True])
async def test_hello_welcome_ping_and_heartbeat(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str, json_mode: bool
) -> None:
    client: Client = await connect(gateway, json=json_mode)
    assert client.ws.protocol == ("khala.v1+json" if json_mode else "khala.v1+proto")
    token = issuer.mint(scope(unique))
    welcome = await client.hello(token)
    assert welcome.connection_id.startswith("c-")
    assert welcome.server_version
    assert welcome.heartbeat_interval_ms == 1_000
    assert welcome.max_frame_bytes == 64 * 1024
    assert abs(welcome.token_expires_at_ms - (int(time.time()) + 300) * 1000) < 5_000
    await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="n-1")))
    assert (await client.expect("pong")).nonce == "n-1"
    beat = await client.recv(3.0, heartbeats=True)
    assert beat.WhichOneof("body") == "heartbeat"
    assert abs(beat.heartbeat.server_time_ms - time.time() * 1000) < 5_000


async def test_no_subprotocol_defaults_to_proto(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway, protocols=())
    await client.hello(issuer.mint(scope(unique)))


async def test_foreign_subprotocol_is_refused_with_400(gateway: GatewayServer) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(
                f"http://127.0.0.1:{gateway.http_port}/v1/ws", protocols=("graphql-ws",)
            )
    assert info.value.status == 400


@pytest.mark.parametrize("kind", ["alg_none", "tampered", "other_key", "wrong_audience", "garbage"])
async def test_invalid_tokens_get_unauthorized_and_4001(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str, kind: str
) -> None:
    narrow = [f"org.{unique}.runs"]
    tokens = {
        "alg_none": lambda: issuer.alg_none(narrow),
        "tampered": lambda: issuer.tampered(narrow, ["org.*.*"]),
        "other_key": lambda: Issuer().mint(narrow),  # unknown kid
        "wrong_audience": lambda: issuer.mint(narrow, aud="khala-api"),
        "garbage": lambda: "not-a-jwt",
    }
    client: Client = await connect(gateway)
    await client.send(ws_pb2.ClientMessage(hello=ws_pb2.Hello(token=tokens[kind]())))
    error = await client.expect("error")
    assert error.code == "unauthorized"
    assert await client.expect_close() == 4001


async def test_expired_token_gets_token_expired(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    past = int(time.time()) - 120  # beyond the 30 s leeway
    await client.send(
        ws_pb2.ClientMessage(
            hello=ws_pb2.Hello(
                token=issuer.mint(scope(unique), exp=past, iat=past - 300, nbf=past - 300)
            )
        )
    )
    assert (await client.expect("error")).code == "token_expired"
    assert await client.expect_close() == 4001


async def test_hello_timeout_closes_4001(gateway: GatewayServer, connect) -> None:
    client: Client = await connect(gateway)
    started = time.monotonic()
    error = await client.expect("error", within=5.0)
    assert error.code == "unauthorized"
    assert await client.expect_close() == 4001
    assert 0.8 < time.monotonic() - started < 4.0  # hello timeout is 1 s in tests


@pytest.mark.parametrize("first", [b"\xff\xff\xff", "subscribe"])
async def test_anything_before_hello_is_unauthorized(
    gateway: GatewayServer, connect, first: bytes | str
) -> None:
    client: Client = await connect(gateway)
    if isinstance(first, bytes):
        await client.ws.send_bytes(first)
    else:
        await client.subscribe(("org.x.runs", "", 0))
    assert (await client.expect("error")).code == "unauthorized"
    assert await client.expect_close() == 4001


async def test_bad_messages_after_hello_get_bad_request_and_keep_the_socket(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint(scope(unique)))
    await client.ws.send_bytes(b"\xff\xff\xff")  # undecodable
    assert (await client.expect("error")).code == "bad_request"
    await client.ws.send_str('{"ping": {}}')  # text on the proto subprotocol
    assert (await client.expect("error")).code == "bad_request"
    await client.send(ws_pb2.ClientMessage())  # empty oneof
    assert (await client.expect("error")).code == "bad_request"
    await client.send(ws_pb2.ClientMessage(hello=ws_pb2.Hello(token="x")))  # second Hello
    assert (await client.expect("error")).code == "bad_request"
    await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="still-open")))
    assert (await client.expect("pong")).nonce == "still-open"


async def test_json_client_sending_binary_gets_bad_request(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway, json=True)
    await client.hello(issuer.mint(scope(unique)))
    await client.ws.send_bytes(b"\x2a\x00")
    assert (await client.expect("error")).code == "bad_request"
    await client.ws.send_str('{"ping":{"nonce":"j"}}')
    assert (await client.expect("pong")).nonce == "j"


async def test_oversized_message_gets_payload_too_large_and_1009(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint(scope(unique)))
    await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="x" * (65 * 1024))))
    assert (await client.expect("error")).code == "payload_too_large"
    assert await client.expect_close() == 1009


async def test_token_expiry_without_refresh_closes_4001(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    exp = int(time.time()) + 1
    await client.hello(issuer.mint(scope(unique), exp=exp))
    error = await client.expect("error", within=6.0)
    assert error.code == "token_expired"
    assert time.time() >= exp + 0.5 - 0.05  # not before exp + grace (0.5 s in tests)
    assert await client.expect_close() == 4001


async def test_refresh_auth_extends_the_token(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint(scope(unique), exp=int(time.time()) + 1))
    await client.send(
        ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=issuer.mint(scope(unique))))
    )
    deadline = time.monotonic() + 3.0  # past exp + grace: still open
    while time.monotonic() < deadline:
        await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="alive")))
        assert (await client.expect("pong")).nonce == "alive"
        await asyncio.sleep(0.2)


async def test_refresh_auth_for_another_user_is_unauthorized(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint(scope(unique)))
    other = issuer.mint(scope(unique), sub="someone-else")
    await client.send(ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=other)))
    assert (await client.expect("error")).code == "unauthorized"
    assert await client.expect_close() == 4001
