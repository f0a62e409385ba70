"""Integration: the outbox relay publishes every event, in order, to the
runtime events exchange of a real RabbitMQ, republishes after a crash, and
has exactly one leader."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import asyncpg
import pytest

from khala_common.broker import Broker
from khala_common.settings import DEFAULT_PARTITIONS
from khala_common.topology import TYPE_HEADER, Topology, partition_of
from khala_runtime.app import relay_key
from khala_runtime.usecases.outbox_relay import OutboxRelay

pytestmark = pytest.mark.integration


Tap = Any


@pytest.fixture
async def tap(open_tap: Any, unique: str) -> Tap:
    return await open_tap("partition.*", org=f"org{unique}")


async def test_every_event_published_in_order(
    api: Any, identity: Any, unique: str, tap: Tap
) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    status, _, _ = await api.call("POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id})
    assert status == 201
    path = f"/api/v1/runs/{run_id}/events"
    receipts = [(await api.call("POST", path, token, {"events": [{"type": "run.started"}]}))[1]]
    for batch, size in enumerate((40, 480, 480, 40)):
        events = [{"type": "run.output", "payload": {"text": f"{batch}.{i}"}} for i in range(size)]
        status, receipt, _ = await api.call("POST", path, token, {"events": events})
        assert status == 201
        receipts.append(receipt)

    expected_ids = []
    for after in (0, 1000):
        _, page, _ = await api.call("GET", f"{path}?after_seq={after}&limit=1000", token)
        expected_ids += [e["event_id"] for e in page["events"]]
    assert len(expected_ids) == 1042

    received = await tap.take(1042)
    assert [e.stream_seq for e in received] == list(range(1, 1043))
    assert [e.event_id for e in received] == expected_ids
    assert all(e.stream_id == f"run:{run_id}" and e.org_id == org for e in received)
    # Batches of the run's partition, each named by its first event.
    partition = partition_of(f"run:{run_id}", DEFAULT_PARTITIONS)
    carriers = list({id(m): m for m in tap.carriers}.values())
    assert 1 < len(carriers) < 1042
    for message in carriers:
        assert message.routing_key == f"partition.{partition}"
        assert message.content_type == "application/x-protobuf"
        assert message.headers[TYPE_HEADER] == "openagents.runtime.v1.RuntimeEventBatch"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.message_id in expected_ids
    assert received[-1].chain_hash == receipts[-1]["chain_hash"]


async def test_unmarked_rows_are_republished(
    api: Any, identity: Any, unique: str, tap: Tap, migrated: str
) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await api.call("POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id})
    await api.call(
        "POST",
        f"/api/v1/runs/{run_id}/events",
        token,
        {"events": [{"type": "run.started"}, {"type": "run.output"}]},
    )
    first = await tap.take(3)
    assert [e.stream_seq for e in first] == [1, 2, 3]

    # As if the relay crashed after the broker confirmed but before it marked the rows.
    conn = await asyncpg.connect(migrated)
    try:
        updated = await conn.execute(
            "UPDATE runtime.outbox SET published_at = NULL WHERE event_id = ANY($1::uuid[])",
            [e.event_id for e in first[1:]],
        )
        assert updated == "UPDATE 2"
        await conn.execute("NOTIFY runtime_outbox")
    finally:
        await conn.close()
    again = await tap.take(5)
    await asyncio.sleep(0.3)
    assert len(tap.events) == 5
    assert [e.stream_seq for e in again] == [1, 2, 3, 2, 3]
    assert [e.event_id for e in again[3:]] == [e.event_id for e in first[1:]]


async def test_backlog_drains_and_single_leader(
    runtime: Any, migrated: str, amqp_url: str, topology: Topology
) -> None:
    relay = runtime.app[relay_key]
    for _ in range(50):
        if relay.is_leader:
            break
        await asyncio.sleep(0.1)
    assert relay.is_leader
    conn = await asyncpg.connect(migrated)
    try:
        for _ in range(100):
            if (
                await conn.fetchval(
                    "SELECT count(*) FROM runtime.outbox WHERE published_at IS NULL"
                )
                == 0
            ):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("outbox backlog did not drain")
    finally:
        await conn.close()

    second_broker = Broker(amqp_url, topology)
    contender = OutboxRelay(
        migrated, second_broker, poll_interval_s=0.1, partitions=DEFAULT_PARTITIONS
    )
    task = asyncio.create_task(contender.run())
    try:
        # Sampled continuously for the whole window, not once after a sleep.
        samples = 0
        deadline = asyncio.get_running_loop().time() + 1.0
        while asyncio.get_running_loop().time() < deadline:
            assert relay.is_leader and not contender.is_leader, (
                f"leaders changed at sample {samples}"
            )
            samples += 1
            await asyncio.sleep(0.002)
        assert samples > 50
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await second_broker.close()
