"""Unit tests of a connection's sender (no I/O): what is ready in one event-loop
turn leaves as one FrameBatch in one write, and stored frame bytes are embedded
as they are (never re-serialized per socket)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.base_protocol import BaseProtocol

from khala_gateway.domain.cursor import StartPlan, TopicHead
from khala_gateway.domain.limits import Limits
from khala_gateway.domain.outbox import Lane
from khala_gateway.domain.principal import Principal
from khala_gateway.domain.wire import (
    WIRE_STATS,
    JsonCodec,
    ProtoCodec,
    WireFrame,
    embed_batch,
    embed_frame,
    ws_message,
)
from khala_gateway.metrics import TopicStats
from khala_gateway.usecases.connection import Connection
from khala_gateway.usecases.send_buffer import FlushQueue
from khala_gateway.usecases.subscription import ReplayGate, State, Subscription
from openagents.sync.v1 import frames_pb2, ws_pb2

TOPICS = ("org.acme.run.a", "org.acme.run.b")


class Hub:
    """The few hub members a connection touches when no subscription is started."""

    log: Any = None
    replays = ReplayGate(10)

    def attach(self, sub: Subscription) -> None:
        pass

    def detach(self, sub: Subscription) -> None:
        pass

    async def acquire_binding(self, topic: str) -> None:
        pass

    async def release_binding(self, topic: str) -> None:
        pass

    def stats_for(self, topic: str) -> TopicStats:
        return TopicStats(topic)


class Socket:
    """Records every WebSocket message the connection writes."""

    def __init__(self) -> None:
        self.sent: list[bytes | str] = []

    async def send(self, data: bytes | str) -> None:
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> bool:
        return True

    def abort(self) -> None:
        pass


def stored(topic: str, seq: int) -> bytes:
    return frames_pb2.KhalaFrame(
        topic=topic, seq=seq, epoch="1", key=f"evt_{seq}", payload_bytes=b"p" * seq
    ).SerializeToString()


LIMITS = Limits(
    max_frame_bytes=1 << 20,
    max_subscriptions=8,
    send_queue_frames=1000,
    send_queue_bytes=1 << 24,
    replay_chunk=100,
)


async def make_live(conn: Connection, socket: Socket) -> dict[str, Subscription]:
    """Start `conn`, subscribe it live to TOPICS and forget what that sent."""
    conn.start(
        Principal("u", "s", "d", ("org.acme.*",), 2**62), ws_pb2.Welcome(connection_id="c-test")
    )
    subs = {}
    for topic in TOPICS:
        sub = Subscription(conn, topic, Lane(topic), TopicStats(topic), max_pending=64)
        conn.subs[topic] = sub
        sub.begin(TopicHead("1", 0, 0), StartPlan(False, 0), [])
        subs[topic] = sub
    for _ in range(100):
        if all(s.state is State.LIVE for s in subs.values()) and not conn.outbox:
            break
        await asyncio.sleep(0.01)
    assert all(s.state is State.LIVE for s in subs.values())
    socket.sent.clear()  # Welcome and the two watermarks
    return subs


async def live_connection(codec: Any) -> tuple[Connection, Socket, dict[str, Subscription]]:
    socket = Socket()
    conn = Connection("c-test", Hub(), codec, socket.send, socket.close, socket.abort, LIMITS)
    return conn, socket, await make_live(conn, socket)


async def test_one_ready_burst_leaves_as_one_frame_batch_in_one_write() -> None:
    conn, socket, subs = await live_connection(ProtoCodec())
    data = {t: [stored(t, s) for s in range(1, 41)] for t in TOPICS}
    for seq in range(1, 41):  # one burst: queued without yielding to the loop
        for topic in TOPICS:
            subs[topic].on_live(WireFrame(seq, "1", data[topic][seq - 1]))
    await asyncio.sleep(0.05)
    assert len(socket.sent) == 1
    message = ws_pb2.ServerMessage.FromString(socket.sent[0])  # type: ignore[arg-type]
    assert message.WhichOneof("body") == "frames"
    frames = list(message.frames.frames)
    assert len(frames) == 80
    for topic in TOPICS:
        assert [f.seq for f in frames if f.topic == topic] == list(range(1, 41))
    # the stored bytes, embedded as they are: round-robin by topic, in seq order per topic
    a, b = (data[t] for t in TOPICS)
    assert socket.sent[0] == embed_batch(a + b)

    subs[TOPICS[0]].on_live(WireFrame(41, "1", stored(TOPICS[0], 41)))  # a later burst
    await asyncio.sleep(0.05)
    assert len(socket.sent) == 2
    assert ws_pb2.ServerMessage.FromString(socket.sent[1]).frame.seq == 41  # type: ignore[arg-type]
    conn.request_close(1000)
    await conn.shutdown()


async def test_json_sockets_share_one_json_form_per_frame() -> None:
    sockets = [await live_connection(JsonCodec()) for _ in range(3)]
    frames = [WireFrame.decode(stored(TOPICS[0], seq)) for seq in range(1, 11)]
    encodes = WIRE_STATS.json_encodes
    for frame in frames:  # the hub offers the same decoded object to every subscriber
        for _, _, subs in sockets:
            subs[TOPICS[0]].on_live(frame)
    await asyncio.sleep(0.05)
    assert WIRE_STATS.json_encodes - encodes == 10  # not 30
    for conn, socket, _ in sockets:
        assert len(socket.sent) == 1 and '"frames"' in str(socket.sent[0])
        conn.request_close(1000)
        await conn.shutdown()


def parse_ws(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked WebSocket message in `data`."""
    out = []
    while data:
        head, size = data[0], data[1] & 0x7F
        assert head & 0x80 and not data[1] & 0x80  # FIN set, no mask
        offset = 2
        if size == 126:
            size, offset = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(data[2:10], "big"), 10
        out.append((head & 0x0F, data[offset : offset + size]))
        data = data[offset + size :]
    return out


class Direct:
    """A transport double: every write lands in one log; `drain` waits for `gate`
    while the transport is "over its limit" (`open` false)."""

    def __init__(self, log: list[bytes | str], gate: asyncio.Event | None = None) -> None:
        self.log = log
        self.gate = gate
        self.open = True
        self.writes = 0

    def writable(self) -> bool:
        return self.open

    def write(self, data: bytes) -> None:
        self.writes += 1
        for opcode, payload in parse_ws(data):
            self.log.append(payload if opcode == 2 else payload.decode())

    async def drain(self) -> None:
        if not self.open and self.gate is not None:
            await self.gate.wait()


async def direct_connection(
    codec: Any, gate: asyncio.Event | None = None
) -> tuple[Connection, Socket, Direct, dict[str, Subscription]]:
    """A live connection with a direct writer whose drain waits for `gate` when given."""
    socket = Socket()
    direct = Direct(socket.sent, gate)
    conn = Connection(
        "c-direct",
        Hub(),
        codec,
        socket.send,
        socket.close,
        socket.abort,
        LIMITS,
        direct=direct,
        flushes=FlushQueue(),
    )
    subs = await make_live(conn, socket)
    direct.writes = 0
    return conn, socket, direct, subs


def seqs_of(messages: list[bytes | str]) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {t: [] for t in TOPICS}
    for raw in messages:
        message = ws_pb2.ServerMessage.FromString(raw)  # type: ignore[arg-type]
        frames = [message.frame] if message.HasField("frame") else list(message.frames.frames)
        for frame in frames:
            got[frame.topic].append(frame.seq)
    return got


async def test_an_idle_socket_gets_a_burst_in_one_direct_write() -> None:
    conn, socket, direct, subs = await direct_connection(ProtoCodec())
    data = {t: [stored(t, s) for s in range(1, 21)] for t in TOPICS}
    for seq in range(1, 21):
        for topic in TOPICS:
            subs[topic].on_live(WireFrame(seq, "1", data[topic][seq - 1]))
    await asyncio.sleep(0.05)
    # One transport write: each live frame as its own (shared) single-frame message.
    assert direct.writes == 1
    assert socket.sent == [embed_frame(data[t][s - 1]) for s in range(1, 21) for t in TOPICS]
    conn.request_close(1000)
    await conn.shutdown()


async def test_live_frames_not_yet_written_go_back_ahead_of_later_content() -> None:
    conn, socket, direct, subs = await direct_connection(ProtoCodec())
    topic = TOPICS[0]
    for seq in (1, 2):  # taken for this turn's flush
        subs[topic].on_live(WireFrame(seq, "1", stored(topic, seq)))
    direct.open = False  # but the transport is over its limit at flush time
    conn.push_control(ws_pb2.ServerMessage(heartbeat=ws_pb2.Heartbeat(server_time_ms=1)))
    subs[topic].on_live(WireFrame(3, "1", stored(topic, 3)))  # queued behind them
    await asyncio.sleep(0.05)
    # The sender wrote the round (heartbeat first, then 1, 2, 3) in one write.
    assert direct.writes == 1
    kinds = [ws_pb2.ServerMessage.FromString(m).WhichOneof("body") for m in socket.sent]  # type: ignore[arg-type]
    assert kinds[0] == "heartbeat"
    assert seqs_of(socket.sent[1:])[topic] == [1, 2, 3]
    conn.request_close(1000)
    await conn.shutdown()


async def test_a_single_frame_message_is_built_once_for_every_socket() -> None:
    conns = [await direct_connection(ProtoCodec()) for _ in range(3)]
    frame = WireFrame.decode(stored(TOPICS[0], 1))
    wire = ProtoCodec().wire_frames([frame])
    for _, _, _, subs in conns:
        subs[TOPICS[0]].on_live(frame)
    await asyncio.sleep(0.05)
    assert ProtoCodec().wire_frames([frame]) is wire  # cached on the frame, per codec
    assert JsonCodec().wire_frames([frame]) is not wire
    for conn, socket, direct, _ in conns:
        assert direct.writes == 1 and socket.sent == [embed_frame(frame.data)]
        conn.request_close(1000)
        await conn.shutdown()


async def test_direct_writes_wait_while_the_sender_is_mid_round() -> None:
    gate = asyncio.Event()
    conn, socket, direct, subs = await direct_connection(ProtoCodec(), gate)
    topic = TOPICS[0]
    direct.open = False  # over the buffer limit: the sender writes and waits for the drain
    subs[topic].on_live(WireFrame(1, "1", stored(topic, 1)))
    await asyncio.sleep(0.02)
    assert seqs_of(socket.sent)[topic] == [1] and direct.writes == 1
    direct.open = True  # the flush could write now, but the sender is mid-round
    for seq in range(2, 6):
        subs[topic].on_live(WireFrame(seq, "1", stored(topic, seq)))
        await asyncio.sleep(0.01)
    assert direct.writes == 1  # nothing overtook the sender
    gate.set()
    await asyncio.sleep(0.05)
    for seq in range(6, 9):  # the sender is idle again: one direct write per turn
        subs[topic].on_live(WireFrame(seq, "1", stored(topic, seq)))
        await asyncio.sleep(0.01)
    assert seqs_of(socket.sent)[topic] == list(range(1, 9))
    assert direct.writes == 2 + 3
    conn.request_close(1000)
    await conn.shutdown()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
async def test_ws_message_matches_aiohttps_writer(size: int) -> None:
    class Capture(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.data = b""

        def write(self, data: Any) -> None:
            self.data += bytes(data)

        def is_closing(self) -> bool:
            return False

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for binary, opcode in ((True, WSMsgType.BINARY), (False, WSMsgType.TEXT)):
        capture = Capture()
        writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), capture, limit=1 << 30)
        await writer.send_frame(payload, opcode)
        assert ws_message(payload, binary=binary) == capture.data
