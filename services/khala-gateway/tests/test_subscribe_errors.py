"""Integration: per-cursor validation and the stale_cursor rules against real topic rows."""

from __future__ import annotations

import pytest
from gateway_testkit import Client, FrameWriter, Issuer

from khala_gateway.app import GatewayServer
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration


async def session(connect, gateway: GatewayServer, issuer: Issuer, org: str) -> Client:
    client: Client = await connect(gateway)
    await client.hello(issuer.mint([f"org.{org}.*", f"org.{org}.run.*"]))
    return client


async def test_invalid_and_forbidden_topics_leave_other_cursors_alone(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client = await session(connect, gateway, issuer, unique)
    good = f"org.{unique}.run.r1"
    await client.subscribe(
        (f"org.{unique}.run.*", "", 0),  # wildcard
        ("not a topic", "", 0),
        (f"org.{unique}.things", "", 0),  # valid grammar, unknown kind
        ("org.elsewhere.runs", "", 0),  # outside scope
        (f"org.{unique}.worker.w1", "", 0),  # outside scope (no worker.* pattern)
        (good, "", 0),
        request_id="req-7",
    )
    answers = [await client.recv() for _ in range(6)]
    codes = [(m.error.code, m.error.topic, m.error.request_id) for m in answers[:5]]
    assert codes == [
        ("invalid_topic", f"org.{unique}.run.*", "req-7"),
        ("invalid_topic", "not a topic", "req-7"),
        ("invalid_topic", f"org.{unique}.things", "req-7"),
        ("forbidden_topic", "org.elsewhere.runs", "req-7"),
        ("forbidden_topic", f"org.{unique}.worker.w1", "req-7"),
    ]
    subscribed = answers[5].subscribed
    assert (subscribed.topic, subscribed.request_id, subscribed.epoch) == (good, "req-7", "1")
    assert (subscribed.head_seq, subscribed.oldest_seq) == (0, 0)  # no row yet: empty topic
    assert (await client.expect("watermark")) == ws_pb2.Watermark(topic=good, seq=0, live=True)


async def test_stale_cursor_reasons_carry_topic_request_and_range(
    gateway: GatewayServer, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.r1"
    for _ in range(10):
        await writer.append(topic, publish=False)
    await writer.trim(topic, 5)
    client = await session(connect, gateway, issuer, unique)
    cases = [("1", 11, "cursor_ahead"), ("1", 2, "retention"), ("9", 6, "epoch_changed")]
    for epoch, after, reason in cases:
        await client.subscribe((topic, epoch, after), request_id=f"r-{reason}")
        error = await client.expect("error")
        assert (error.code, error.reason, error.topic, error.request_id) == (
            "stale_cursor",
            reason,
            topic,
            f"r-{reason}",
        )
        assert (error.oldest_seq, error.head_seq) == (5, 10)
    # the same subscription at oldest - 1 is fine
    await client.subscribe((topic, "1", 4))
    assert (await client.expect("subscribed")).head_seq == 10


async def test_duplicate_subscription_and_subscription_limit(
    gateway: GatewayServer, issuer: Issuer, connect, unique: str
) -> None:
    client = await session(connect, gateway, issuer, unique)
    topics = [f"org.{unique}.run.r{i}" for i in range(10)]
    await client.subscribe((topics[0], "", 0))
    assert (await client.expect("subscribed")).topic == topics[0]
    await client.expect("watermark")
    await client.subscribe((topics[0], "", 0), request_id="again")
    error = await client.expect("error")
    assert (error.code, error.topic) == ("bad_request", topics[0])
    # More cursors in one message than the limit: one error for the whole message.
    await client.subscribe(*[(t, "", 0) for t in topics[1:]], request_id="many")
    error = await client.expect("error")
    assert (error.code, error.request_id, error.topic) == ("too_many_subscriptions", "many", "")
    await client.subscribe(*[(t, "", 0) for t in topics[1:8]], request_id="seven")
    await client.subscribe(*[(t, "", 0) for t in topics[8:]], request_id="two")
    seen: dict[str, str] = {}
    while len(seen) < 9:
        message = await client.recv()
        kind = message.WhichOneof("body")
        if kind == "subscribed":
            seen[message.subscribed.topic] = "ok"
        elif kind == "error":
            seen[message.error.topic] = message.error.code
    assert [seen[t] for t in topics[1:8]] == ["ok"] * 7  # the limit is 8 in tests
    assert [seen[t] for t in topics[8:]] == ["too_many_subscriptions"] * 2
