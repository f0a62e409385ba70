"""Unit tests of a connection's sender (no I/O): what is ready in one event-loop
turn leaves as one FrameBatch in one write, and stored frame bytes are embedded
as they are (never re-serialized per socket)."""

from __future__ import annotations

import asyncio
from typing import Any

from khala_gateway.delivery.connection import Connection, Limits
from khala_gateway.delivery.subscription import ReplayGate, State, Subscription
from khala_gateway.domain.cursor import StartPlan, TopicHead
from khala_gateway.domain.outbox import Lane
from khala_gateway.domain.principal import Principal
from khala_gateway.domain.wire import WIRE_STATS, JsonCodec, ProtoCodec, WireFrame, embed_batch
from khala_gateway.metrics import TopicStats
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


async def live_connection(codec: Any) -> tuple[Connection, Socket, dict[str, Subscription]]:
    socket = Socket()
    limits = Limits(
        max_frame_bytes=1 << 20,
        max_subscriptions=8,
        send_queue_frames=1000,
        send_queue_bytes=1 << 24,
        replay_chunk=100,
    )
    conn = Connection("c-test", Hub(), codec, socket.send, socket.close, socket.abort, limits)
    conn.start(Principal("u", "s", "d", ("org.acme.*",), 2**62), ws_pb2.Welcome(connection_id="c-test"))
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
    return conn, socket, subs


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
