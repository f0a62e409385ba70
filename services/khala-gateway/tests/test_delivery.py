"""Integration: replay, snapshot, live handover, gap fill and head poll, end to end
through real Postgres rows and real khala.fanout messages."""

from __future__ import annotations

import asyncio
import random

import pytest
from gateway_testkit import (
    DELETE,
    UPSERT,
    Client,
    FrameWriter,
    Issuer,
    Timeline,
    collect_until,
    wait_for,
)

from khala_gateway import metrics
from khala_gateway.app import GatewayServer
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration


async def session(
    connect, server: GatewayServer, issuer: Issuer, org: str, *, json: bool = False
) -> Client:
    client: Client = await connect(server, json=json)
    await client.hello(issuer.mint([f"org.{org}.*", f"org.{org}.run.*"]))
    return client


def has_seq(topic: str, seq: int):
    return lambda t: seq in t.seqs(topic)


def counter(c) -> float:
    return c._value.get()


async def test_replay_then_live_while_frames_keep_coming(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.hot"
    for _ in range(250):  # more than two replay chunks (100 in tests)
        await writer.append(topic)
    rng = random.Random(3)
    total = 600

    async def keep_writing() -> None:
        for i in range(251, total + 1):
            # some broker messages never happen (frame only in Postgres); never the last
            await writer.append(topic, publish=i == total or rng.random() > 0.1)
            if i % 25 == 0:
                await asyncio.sleep(0.01)

    writing = asyncio.create_task(keep_writing())
    proto = await session(connect, gateway, issuer, unique)
    js = await session(connect, gateway, issuer, unique, json=True)
    await asyncio.sleep(0.05)
    await proto.subscribe((topic, "", 0))
    await js.subscribe((topic, "", 0))
    timelines = await asyncio.gather(
        collect_until(proto, has_seq(topic, total), 30),
        collect_until(js, has_seq(topic, total), 30),
    )
    await writing
    for timeline in timelines:
        assert timeline.seqs(topic) == list(range(1, total + 1))  # no dup, no gap, in order
        kinds = timeline.kinds(topic)
        assert kinds[0] == "subscribed"
        assert kinds.count("watermark") == 1
        for frame in timeline.frames(topic):
            assert frame.key == f"evt_{frame.seq}"
            assert frame.payload_bytes == f"payload-{frame.seq}".encode()
    assert proto.ws_messages < total  # frames were coalesced into batches


async def test_resume_from_a_cursor_gets_exactly_the_rest(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.r1"
    for _ in range(30):
        await writer.append(topic)
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((topic, "1", 12))
    subscribed = await client.expect("subscribed")
    assert (subscribed.epoch, subscribed.head_seq, subscribed.oldest_seq) == ("1", 30, 1)
    timeline = await collect_until(client, lambda t: "watermark" in t.kinds(topic))
    assert timeline.seqs(topic) == list(range(13, 31))
    assert timeline.items[-1][1] == ws_pb2.Watermark(topic=topic, seq=30, live=True)
    await writer.append(topic)
    assert (await client.expect("frame")).seq == 31


async def test_unpublished_frame_is_gap_filled_when_the_next_one_arrives(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.gappy"
    async with make_gateway(head_poll_interval_s=600) as server:  # only the gap path can help
        client = await session(connect, server, issuer, unique)
        await client.subscribe((topic, "", 0))
        await client.expect("subscribed")
        await client.expect("watermark")
        await writer.append(topic)
        assert (await client.expect("frame")).seq == 1
        fills = counter(metrics.GAP_FILLS)
        await writer.append(topic, publish=False)  # committed, but its message is lost
        with pytest.raises(TimeoutError):
            await client.recv(0.5)  # nothing tells the gateway about 2 yet
        await writer.append(topic)
        timeline = await collect_until(client, has_seq(topic, 3), 3)
        assert timeline.seqs(topic) == [2, 3]
        assert counter(metrics.GAP_FILLS) > fills


async def test_lost_last_frame_is_delivered_by_the_head_poll(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.quiet"
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((topic, "", 0))
    await client.expect("subscribed")
    await client.expect("watermark")
    catches = counter(metrics.HEAD_POLL_CATCHES)
    await writer.append(topic, publish=False)
    await writer.append(topic, publish=False)
    timeline = await collect_until(client, has_seq(topic, 2), 3)  # poll every 0.3 s
    assert timeline.seqs(topic) == [1, 2]
    assert counter(metrics.HEAD_POLL_CATCHES) > catches


async def test_doc_topic_fresh_subscription_gets_a_snapshot_then_live(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.runs"
    keys = [f"run_{i:03d}" for i in range(230)]
    for key in keys:  # seq 1..230
        await writer.append(topic, kind=UPSERT, key=key, payload=b"v1")
    for key in keys[:10]:  # seq 231..240 supersede the first ten
        await writer.append(topic, kind=UPSERT, key=key, payload=b"v2")
    await writer.append(topic, kind=DELETE, key=keys[20])  # seq 241
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((topic, "", 0))
    assert (await client.expect("subscribed")).head_seq == 241
    begin = await client.expect("snapshot_begin")
    assert (begin.topic, begin.epoch, begin.as_of_seq) == (topic, "1", 241)
    timeline = await collect_until(client, lambda t: "watermark" in t.kinds(topic))
    frames = timeline.frames(topic)
    expected = [s for s in range(11, 231) if s != 21] + list(range(231, 241))
    assert [f.seq for f in frames] == expected  # one per live key, increasing seq
    assert {f.key for f in frames} == set(keys) - {keys[20]}
    assert all(f.payload_bytes == b"v2" for f in frames if f.key in keys[:10])
    assert [k for k in timeline.kinds(topic) if k != "frame"] == ["snapshot_end", "watermark"]
    end = next(v for k, v in timeline.items if k == "snapshot_end")
    assert end.as_of_seq == 241
    assert timeline.items[-1][1].seq == 241
    await writer.append(topic, kind=UPSERT, key="run_new")
    assert (await client.expect("frame")).seq == 242


async def test_empty_doc_topic_gets_an_empty_snapshot(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    topic = f"org.{unique}.workers"
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((topic, "", 0))
    await client.expect("subscribed")
    assert (await client.expect("snapshot_begin")).as_of_seq == 0
    assert (await client.expect("snapshot_end")).as_of_seq == 0
    assert (await client.expect("watermark")).seq == 0


async def test_retention_on_a_doc_topic_with_snapshot_if_stale(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.runs"
    for i in range(5):
        await writer.append(topic, kind=UPSERT, key=f"k{i}")  # 1..5
    for i in range(3):
        await writer.append(topic, kind=UPSERT, key=f"k{i}")  # 6..8
    await writer.compact(topic, 7)  # leaves 4, 5, 6, 7, 8
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((topic, "1", 2))
    error = await client.expect("error")
    assert (error.code, error.reason, error.oldest_seq, error.head_seq) == (
        "stale_cursor",
        "retention",
        7,
        8,
    )
    await client.subscribe((topic, "1", 2), snapshot_if_stale=True)
    await client.expect("subscribed")
    assert (await client.expect("snapshot_begin")).as_of_seq == 8
    timeline = await collect_until(client, lambda t: "watermark" in t.kinds(topic))
    assert timeline.seqs(topic) == [4, 5, 6, 7, 8]


async def test_epoch_change_while_subscribed_ends_the_subscription(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.rebuilt"
    await writer.append(topic)
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((topic, "", 0))
    await collect_until(client, lambda t: "watermark" in t.kinds(topic))
    await writer.new_epoch(topic, "2")
    await writer.append(topic)
    error = await client.expect("error")
    assert (error.code, error.reason, error.topic) == ("stale_cursor", "epoch_changed", topic)
    await client.subscribe((topic, "", 0))
    assert (await client.expect("subscribed")).epoch == "2"


async def test_unsubscribe_stops_frames_and_releases_the_binding(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.shared"
    a = await session(connect, gateway, issuer, unique)
    b = await session(connect, gateway, issuer, unique)
    for client in (a, b):
        await client.subscribe((topic, "", 0))
        await client.expect("subscribed")
        await client.expect("watermark")
    bindings = gateway.hub.bindings
    assert bindings is not None and topic in bindings.topics()
    await a.send(ws_pb2.ClientMessage(unsubscribe=ws_pb2.Unsubscribe(topics=[topic, "org.x.runs"])))
    await a.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="after-unsub")))
    assert (await a.expect("pong")).nonce == "after-unsub"
    await writer.append(topic)
    assert (await b.expect("frame")).seq == 1  # the other subscriber still gets it
    assert topic in bindings.topics()
    await a.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="quiet")))
    assert (await a.expect("pong")).nonce == "quiet"  # no frame came before it
    await b.send(ws_pb2.ClientMessage(unsubscribe=ws_pb2.Unsubscribe(topics=[topic])))
    await wait_for(lambda: topic not in bindings.topics())


async def test_refresh_auth_narrowing_drops_topics_with_forbidden_topic(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    runs, events = f"org.{unique}.runs", f"org.{unique}.run.r1"
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe((runs, "", 0), (events, "", 0))
    await collect_until(
        client, lambda t: "watermark" in t.kinds(runs) and "watermark" in t.kinds(events)
    )
    await client.send(
        ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=issuer.mint([runs])))
    )
    error = await client.expect("error")
    assert (error.code, error.topic) == ("forbidden_topic", events)
    await writer.append(events)
    await writer.append(runs, kind=UPSERT, key="run_1")
    frame = await client.expect("frame")
    assert frame.topic == runs


async def test_many_topics_on_one_socket_are_all_served(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topics = [f"org.{unique}.run.t{i}" for i in range(5)]
    for topic in topics:
        await writer.append_many(topic, 1500)
    client = await session(connect, gateway, issuer, unique)
    await client.subscribe(*[(t, "", 0) for t in topics])
    timeline: Timeline = await collect_until(
        client, lambda t: all("watermark" in t.kinds(x) for x in topics), 30
    )
    for topic in topics:
        assert timeline.seqs(topic) == list(range(1, 1501))
    # round-robin: no topic finished its replay before every topic had started
    first_frame = {
        t: next(i for i, (k, v) in enumerate(timeline.items) if k == "frame" and v.topic == t)
        for t in topics
    }
    last_frame = {
        t: max(i for i, (k, v) in enumerate(timeline.items) if k == "frame" and v.topic == t)
        for t in topics
    }
    assert max(first_frame.values()) < min(last_frame.values())


async def test_live_frames_of_one_topic_overtake_a_long_replay_of_another(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    big, quiet = f"org.{unique}.run.big", f"org.{unique}.run.quiet"
    total = 3000
    await writer.append_many(big, total, payload_size=4096)  # ~12 MB: more than socket buffers hold
    async with make_gateway(send_queue_frames=200, replay_chunk=100) as server:
        client = await session(connect, server, issuer, unique)
        await client.subscribe((quiet, "", 0), (big, "", 0))
        timeline = await collect_until(client, lambda t: len(t.seqs(big)) > 0)
        await writer.append(quiet)  # goes live while the replay of `big` is in progress
        await asyncio.sleep(0.3)  # the replay cannot finish: the client is not reading
        await collect_until(
            client, lambda t: "watermark" in t.kinds(big) and 1 in t.seqs(quiet), 20, timeline
        )
    assert timeline.seqs(big) == list(range(1, total + 1))
    assert timeline.seqs(quiet) == [1]
    position = {id(v): i for i, (_, v) in enumerate(timeline.items)}
    live_at = position[id(timeline.frames(quiet)[0])]
    big_watermark_at = max(
        i for i, (k, v) in enumerate(timeline.items) if k == "watermark" and v.topic == big
    )
    replayed_after = sum(1 for f in timeline.frames(big) if position[id(f)] > live_at)
    assert live_at < big_watermark_at
    assert replayed_after >= total // 3, (
        replayed_after
    )  # the live frame did not wait for the replay
