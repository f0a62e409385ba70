"""Integration: every inbound field has a bound with one documented answer, and a
client that provokes replies without reading them is evicted (4008) instead of
growing the gateway (docs/protocol.md §6)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pytest
from gateway_testkit import Client, Issuer, wait_for

from khala_gateway import metrics
from khala_gateway.app import GatewayServer
from khala_gateway.domain.limits import hard_cap
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration


def subscribe(request_id: str, topics: list[str]) -> ws_pb2.ClientMessage:
    cursors = [ws_pb2.TopicCursor(topic=topic) for topic in topics]
    return ws_pb2.ClientMessage(subscribe=ws_pb2.Subscribe(request_id=request_id, cursors=cursors))


async def ping_pong(client: Client, nonce: str = "after") -> None:
    """The next reply is the Pong: nothing else was queued before it."""
    await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce=nonce)))
    reply = await client.recv()
    assert reply.WhichOneof("body") == "pong" and reply.pong.nonce == nonce, reply


async def test_too_many_cursors_get_one_error_for_the_whole_message(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint([f"org.{unique}.*"]))
    limit = gateway.gateway.settings.max_subscriptions
    topics = [f"org.{unique}.run.r{i}" for i in range(limit + 1)]
    await client.send(subscribe("big", topics))
    error = await client.expect("error")
    assert (error.code, error.request_id, error.topic) == ("too_many_subscriptions", "big", "")
    await ping_pong(client)  # one error, not one per cursor
    # The same for an Unsubscribe naming too many topics.
    await client.send(
        ws_pb2.ClientMessage(unsubscribe=ws_pb2.Unsubscribe(request_id="u", topics=topics))
    )
    assert (await client.expect("error")).code == "too_many_subscriptions"
    await ping_pong(client)


@pytest.mark.parametrize(
    ("request_id", "topic", "code", "echo"),
    [
        ("r" * 129, "org.x.runs", "bad_request", ""),
        ("ok", "org." + "a" * 252, "invalid_topic", "ok"),  # 256 bytes
    ],
    ids=["request_id", "topic"],
)
async def test_over_long_request_ids_and_topics_are_refused(
    gateway: GatewayServer,
    issuer: Issuer,
    connect,
    unique: str,
    request_id: str,
    topic: str,
    code: str,
    echo: str,
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint([f"org.{unique}.*"]))
    await client.send(subscribe(request_id, [topic]))
    error = await client.expect("error")
    assert (error.code, error.request_id, error.topic) == (code, echo, "")
    await ping_pong(client)
    # At the limit is accepted.
    await client.send(subscribe("r" * 128, [f"org.{unique}.runs"]))
    assert (await client.expect("subscribed")).request_id == "r" * 128


async def test_ping_nonce_length(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint([f"org.{unique}.*"]))
    await ping_pong(client, "n" * 128)
    await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="n" * 129)))
    assert (await client.expect("error")).code == "bad_request"


@pytest.mark.parametrize("field", ["client_name", "client_version"])
async def test_over_long_hello_fields_are_refused(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str, field: str
) -> None:
    client: Client = await connect(gateway)
    hello = ws_pb2.Hello(
        token=issuer.mint([f"org.{unique}.*"]), client_name="t", client_version="1"
    )
    setattr(hello, field, "x" * 65)
    await client.send(ws_pb2.ClientMessage(hello=hello))
    error = await client.expect("error")
    assert error.code == "bad_request" and field in error.message
    assert await client.expect_close() == 4001


async def test_a_message_before_hello_is_at_most_16_kib(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client: Client = await connect(gateway)
    padded = ws_pb2.Hello(token=issuer.mint([f"org.{unique}.*"]), client_name="t" * 0)
    message = ws_pb2.ClientMessage(hello=padded)
    message.hello.token += "x" * (16 * 1024)
    await client.send(message)
    assert (await client.expect("error")).code == "payload_too_large"
    assert await client.expect_close() == 1009


class RawSocket:
    """A WebSocket client on a plain TCP socket with a tiny receive buffer that never
    reads after the upgrade: the gateway's replies can only pile up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)

    async def open(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            self.sock,
            (
                "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: khala.v1+proto\r\n\r\n"
            ).encode(),
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(self.sock, 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    async def send(self, message: ws_pb2.ClientMessage) -> None:
        payload = message.SerializeToString()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x82, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x82, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_sendall(self.sock, header + mask + masked), 1.0)


async def test_a_client_that_provokes_replies_and_never_reads_is_evicted(
    make_gateway, issuer: Issuer, connect, unique: str
) -> None:
    send_queue_bytes = 64 * 1024
    async with make_gateway(
        send_queue_bytes=send_queue_bytes,
        max_messages_per_s=1_000_000.0,
        message_burst=1_000_000,
        slow_consumer_grace_s=60.0,  # the hard cap, not the grace, must evict it
    ) as server:
        normal: Client = await connect(server)
        await normal.hello(issuer.mint([f"org.{unique}.runs"]))
        user = f"abuser-{unique}"
        raw = RawSocket()
        await raw.open(server.http_port or 0)
        hello = ws_pb2.Hello(
            token=issuer.mint([f"org.{unique}.runs"], sub=user), client_version="1"
        )
        await raw.send(ws_pb2.ClientMessage(hello=hello))
        await wait_for(lambda: server.hub.user_connections(user) == 1)
        (conn,) = [c for c in server.hub.connections if c.principal and c.principal.user_id == user]
        evictions = metrics.SLOW_CONSUMER_EVICTIONS._value.get()
        # 8 errors per message, each echoing a 255-byte topic (~2.7 KB of replies)
        invalid = [f"{i}" + "x" * 254 for i in range(8)]
        peak = 0
        for batch in range(2_000):
            if conn.closing:
                break
            try:
                for i in range(20):
                    await raw.send(subscribe(f"r{batch}-{i}", invalid))
            except OSError:  # incl. timeout: the gateway stopped reading us
                break
            await asyncio.sleep(0.002)  # the gateway runs on this loop: let it read
            peak = max(peak, conn.outbox.bytes)
        await wait_for(lambda: conn.closing, within=10.0)
        assert conn.closing, "the abusive connection was not evicted"
        assert peak <= hard_cap(send_queue_bytes) + 1024  # the reply that crossed it
        await wait_for(lambda: server.hub.user_connections(user) == 0, within=10.0)
        assert metrics.SLOW_CONSUMER_EVICTIONS._value.get() == evictions + 1
        raw.sock.close()
        await ping_pong(normal)  # the client beside it was served all along
