"""Broker.is_connected (the services' broker readiness check) trips when the
connection to RabbitMQ is lost, and recovers when the robust connection is back.
The loss is real: the broker is reached through a TCP relay the test cuts."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import pytest

from khala_common.broker import Broker
from khala_common.testing import TcpRelay
from khala_common.topology import Topology

pytestmark = pytest.mark.integration


Relay = TcpRelay


async def _until(broker: Broker, connected: bool) -> None:
    for _ in range(300):
        if broker.is_connected is connected:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"is_connected never became {connected}")


async def test_is_connected_trips_on_a_lost_connection_and_recovers(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5672)
    await relay.open()
    creds, _, _ = parts.netloc.rpartition("@")
    url = urlunsplit(
        parts._replace(
            netloc=f"{creds}@127.0.0.1:{relay.port}" if creds else f"127.0.0.1:{relay.port}"
        )
    )
    broker = Broker(url, Topology("readiness."))
    await broker.connect()
    try:
        assert broker.is_connected
        await relay.cut()
        await _until(broker, False)
        await relay.open()  # the robust connection reconnects (its retry interval is 5 s)
        await _until(broker, True)
    finally:
        await broker.close()
        await relay.cut()
