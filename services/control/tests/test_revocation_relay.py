"""The revocation outbox survives a real broker outage and is published once it is back.

The broker is a RabbitMQ node of this test's own (scripts/servers.py): the relay
is connected, the node is SIGKILLed, a revocation is enqueued and cannot be
published, the node is started again on its data, and the relay's (robust)
connection recovers and publishes the revocation exactly once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from khala_common.broker import Broker
from khala_common.db import create_pool
from khala_common.topology import Topology
from khala_control.domain.models import DeviceSession
from khala_control.settings import SCHEMA
from khala_control.usecases.revocations import RevocationRelay, enqueue_revocation
from openagents.control.v1 import revocation_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

from servers import PrivateRabbitMQ

pytestmark = pytest.mark.integration

RECOVERY_S = 60.0  # generous: the node restarts and the robust connection reconnects


@pytest.fixture
async def rabbit() -> AsyncIterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ()
    await asyncio.to_thread(node.start)
    try:
        yield node
    finally:
        await asyncio.to_thread(node.close)


async def _connected_broker(url: str, topology: Topology) -> Broker:
    """A Broker connected to `url` (retried while the node finishes booting)."""
    async with asyncio.timeout(RECOVERY_S):
        while True:
            broker = Broker(url, topology)
            try:
                await broker.connect()
                return broker
            except Exception:
                await broker.close()
                await asyncio.sleep(0.2)


async def _enqueue(pool, session_id: str) -> str:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    session = DeviceSession(session_id, "usr_x", "dev_x", "web", "1", now, now, now)
    async with pool.acquire() as conn, conn.transaction():
        return await enqueue_revocation(
            conn,
            [session],
            kind=revocation_pb2.REVOCATION_KIND_SESSION,
            user_id="usr_x",
            reason="logout",
            now_ms=1,
        )


async def _received(url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in the durable test queue (read once it is quiet)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()


async def test_pending_revocations_wait_for_a_broker_that_was_killed_and_restarted(
    empty_database: str, topology: Topology, rabbit: PrivateRabbitMQ
) -> None:
    pool = await create_pool(empty_database, SCHEMA)
    broker = await _connected_broker(rabbit.url, topology)
    # A durable queue bound to the control exchange keeps what is published across restarts.
    setup = await aio_pika.connect(rabbit.url)
    channel = await setup.channel()
    exchange = await channel.declare_exchange(
        topology.control, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue("revocations-under-test", durable=True)
    await queue.bind(exchange, routing_key="session.revoked")
    await setup.close()
    relay = RevocationRelay(pool, broker, topology.control, poll_s=60)
    try:
        before = await _enqueue(pool, "ses_before")
        assert await relay.drain() == 1

        await asyncio.to_thread(rabbit.kill)
        during = await _enqueue(pool, "ses_outage")
        with pytest.raises(Exception):  # noqa: B017 - any failure: the broker is gone
            async with asyncio.timeout(15):
                await relay.drain()
        pending = await pool.fetchval(
            "SELECT count(*) FROM revocation_outbox WHERE published_at IS NULL"
        )
        assert pending == 1

        await asyncio.to_thread(rabbit.start)
        async with asyncio.timeout(RECOVERY_S):
            while True:
                try:
                    published = await relay.drain()
                    break
                except Exception:
                    await asyncio.sleep(0.5)
        assert published == 1
        assert await relay.drain() == 0  # published exactly once by this relay

        messages = await _received(rabbit.url, "revocations-under-test")
        assert [m.message_id for m in messages] == [before, during]
        revocation = revocation_pb2.Revocation.FromString(messages[1].body)
        assert list(revocation.session_ids) == ["ses_outage"]
        assert (revocation.user_id, revocation.device_id) == ("usr_x", "dev_x")
    finally:
        await broker.close()
        await pool.close()
