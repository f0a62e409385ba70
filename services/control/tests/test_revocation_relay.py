"""The revocation outbox survives a broker outage and is published once it is back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from khala_common.broker import Broker
from khala_common.db import create_pool
from khala_common.topology import Topology
from khala_control.domain.models import DeviceSession
from khala_control.settings import SCHEMA
from khala_control.usecases.revocations import RevocationRelay, enqueue_revocation
from openagents.control.v1 import revocation_pb2

pytestmark = pytest.mark.integration


async def test_pending_revocations_wait_for_the_broker(
    empty_database: str, amqp_url: str, topology: Topology, revocations
) -> None:
    pool = await create_pool(empty_database, SCHEMA)
    broker = Broker(amqp_url, topology)  # not connected yet: the broker is "down"
    relay = RevocationRelay(pool, broker, topology.control, poll_s=60)
    now = datetime.now(UTC)
    session = DeviceSession("ses_outage", "usr_x", "dev_x", "web", "1", now, now, now)
    try:
        async with pool.acquire() as conn, conn.transaction():
            message_id = await enqueue_revocation(
                conn,
                [session],
                kind=revocation_pb2.REVOCATION_KIND_SESSION,
                user_id="usr_x",
                reason="logout",
                now_ms=1,
            )
        with pytest.raises(RuntimeError):
            await relay.drain()
        pending = await pool.fetchval(
            "SELECT count(*) FROM revocation_outbox WHERE published_at IS NULL"
        )
        assert pending == 1

        await broker.connect()
        assert await relay.drain() == 1
        assert await relay.drain() == 0  # published exactly once by this relay
        message = await revocations.wait_for("ses_outage")
        assert message.message_id == message_id
        revocation = revocation_pb2.Revocation.FromString(message.body)
        assert (revocation.user_id, revocation.device_id) == ("usr_x", "dev_x")
    finally:
        await broker.close()
        await pool.close()
