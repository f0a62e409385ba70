"""Integration: a fanout message is parsed once per process and its stored bytes
reach every proto subscriber unchanged; JSON subscribers share one JSON form per
frame; a burst of frames ready at once leaves as one FrameBatch."""

from __future__ import annotations

import asyncio

import pytest
from gateway_testkit import Client, FrameWriter, Issuer, collect_until

from khala_gateway import metrics
from khala_gateway.domain.wire import WIRE_STATS, embed_frame
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration

PROTO_SOCKETS, JSON_SOCKETS, FRAMES = 4, 3, 12


async def test_each_frame_is_parsed_once_and_embedded_as_stored(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.fan"
    async with make_gateway(head_poll_interval_s=600) as server:
        clients: list[Client] = []
        for i in range(PROTO_SOCKETS + JSON_SOCKETS):
            client = await connect(server, json=i >= PROTO_SOCKETS)
            await client.hello(issuer.mint([f"org.{unique}.run.*"]))
            await client.subscribe((topic, "", 0))
            await client.expect("subscribed")
            await client.expect("watermark")
            clients.append(client)
        parses, encodes = WIRE_STATS.parses, WIRE_STATS.json_encodes
        fanout = metrics.HOT.fanout_messages
        for _ in range(FRAMES):
            await writer.append(topic)
            await asyncio.sleep(0.02)  # one fanout message at a time: one `frame` each
        for client in clients:
            timeline = await collect_until(client, lambda t: FRAMES in t.seqs(topic), 10)
            assert timeline.seqs(topic) == list(range(1, FRAMES + 1))
        assert metrics.HOT.fanout_messages - fanout == FRAMES
        assert WIRE_STATS.parses - parses == FRAMES  # not FRAMES x 7 subscribers
        assert WIRE_STATS.json_encodes - encodes == FRAMES  # not FRAMES x 3 JSON sockets


async def test_proto_socket_gets_the_stored_bytes_verbatim(
    gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.bytes"
    client: Client = await connect(gateway)
    await client.hello(issuer.mint([f"org.{unique}.run.*"]))
    await client.subscribe((topic, "", 0))
    await client.expect("subscribed")
    await client.expect("watermark")
    frame = await writer.append(topic, payload=b"\x00\xffraw")
    msg = await client.ws.receive(timeout=5)
    while ws_pb2.ServerMessage.FromString(msg.data).WhichOneof("body") == "heartbeat":
        msg = await client.ws.receive(timeout=5)
    async with writer.pool.acquire() as conn:
        row = await conn.fetchval(
            "SELECT frame_bytes FROM frames WHERE topic = $1 AND seq = 1", topic
        )
    assert msg.data == embed_frame(row)
    assert ws_pb2.ServerMessage.FromString(msg.data).frame == frame


async def test_frames_ready_together_leave_as_one_frame_batch(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.burst"
    async with make_gateway(head_poll_interval_s=600) as server:
        client: Client = await connect(server)
        await client.hello(issuer.mint([f"org.{unique}.run.*"]))
        await client.subscribe((topic, "", 0))
        await client.expect("subscribed")
        await client.expect("watermark")
        await writer.append(topic)
        assert (await client.expect("frame")).seq == 1
        for _ in range(60):  # committed; their broker messages are lost
            await writer.append(topic, publish=False)
        await writer.append(topic)  # 62 arrives: 2..61 are read in one chunk (100 in tests)
        batch = await client.expect("frames")
        assert [f.seq for f in batch.frames] == list(range(2, 63))  # one message, one write
