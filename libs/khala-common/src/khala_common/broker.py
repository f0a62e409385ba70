"""RabbitMQ: a robust aio-pika connection, topology declaration (DESIGN §9)
and protobuf publishing with publisher confirms.

`publish` returns only once the broker has confirmed the message, so a caller
that marks work done after it (the outbox relay, the projector's publish
cursor) never marks a message the broker did not take: delivery is
at-least-once, and consumers dedupe by `message_id` / sequence numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from google.protobuf.message import Message

from khala_common.settings import MAX_PARTITIONS
from khala_common.telemetry import inject_headers
from khala_common.topology import (
    CONTENT_TYPE,
    LEGACY_EVENT_KEYS,
    TYPE_HEADER,
    Topology,
    partition_key,
    partition_queue,
)


class Broker:
    """One connection and one confirming channel of a service."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @property
    def channel(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise RuntimeError("broker is not connected")
        return self._channel

    async def connect(self, *, prefetch: int = 0) -> None:
        """Open the connection and a publisher-confirming channel."""
        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel(publisher_confirms=True)
        if prefetch:
            await channel.set_qos(prefetch_count=prefetch)
        self._channel = channel

    async def close(self) -> None:
        """Close channel and connection (idempotent)."""
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._channel = None
        self._exchanges.clear()

    @property
    def is_connected(self) -> bool:
        """Connected right now. A robust connection that lost the broker is not
        `is_closed` while it reconnects; its `connected` event is what tells."""
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def declare_exchanges(self) -> None:
        """Declare the three durable topic exchanges of DESIGN §9."""
        for name in (self.topology.runtime_events, self.topology.fanout, self.topology.control):
            await self.exchange(name)

    async def exchange(self, name: str) -> AbstractExchange:
        """A durable topic exchange, declared once per channel."""
        existing = self._exchanges.get(name)
        if existing is not None:
            return existing
        exchange = await self.channel.declare_exchange(
            name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._exchanges[name] = exchange
        return exchange

    async def declare_projector_queue(
        self, delivery_limit: int, partition: int = 0
    ) -> AbstractQueue:
        """A projector partition's quorum queue (single active consumer) and the
        shared DLQ; bound to `partition.<k>` (partition 0 also to the per-event keys
        of older publishers, see topology.py)."""
        t = self.topology
        dlx = await self.channel.declare_exchange(
            t.projector_dlx, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dlq = await self.channel.declare_queue(
            t.projector_dlq, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx)
        queue = await self.channel.declare_queue(
            partition_queue(t, partition),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-single-active-consumer": True,
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": t.projector_dlx,
            },
        )
        exchange = await self.exchange(t.runtime_events)
        await queue.bind(exchange, routing_key=partition_key(partition))
        if partition == 0:
            for key in LEGACY_EVENT_KEYS:
                await queue.bind(exchange, routing_key=key)
            # The catch-all binding of the single-queue projector would route
            # every partition's batches here too.
            await queue.unbind(exchange, routing_key="#")
        return queue

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: Message,
        *,
        message_id: str,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish one proto message and wait for the broker's confirm."""
        await self.publish_raw(
            exchange,
            routing_key,
            body.SerializeToString(),
            type_name=body.DESCRIPTOR.full_name,
            message_id=message_id,
            persistent=persistent,
            headers=headers,
        )

    async def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        type_name: str,
        message_id: str,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish already-serialized proto bytes and wait for the confirm; with
        `mandatory`, a message no queue takes fails (aiormq PublishError)."""
        target = await self.exchange(exchange)
        all_headers: dict[str, Any] = {TYPE_HEADER: type_name}
        inject_headers(all_headers)
        if headers:
            all_headers.update(headers)
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            message_id=message_id,
            headers=all_headers,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )
        # Fanout is not mandatory: frames of an org no gateway holds are dropped.
        await target.publish(message, routing_key=routing_key, mandatory=mandatory)


async def delete_prefixed(url: str, topology: Topology, extra_queues: Sequence[str] = ()) -> None:
    """Delete a test run's exchanges and queues (used by test teardown)."""
    connection = await aio_pika.connect(url)
    try:
        partitions = [partition_queue(topology, k) for k in range(MAX_PARTITIONS)]
        channel = await connection.channel()
        for queue in (*partitions, topology.projector_dlq, *extra_queues):
            try:
                await channel.queue_delete(queue)
            except aio_pika.exceptions.AMQPError:
                channel = await connection.channel()  # an error closes the channel
        for name in (
            topology.runtime_events,
            topology.fanout,
            topology.control,
            topology.projector_dlx,
        ):
            channel = await connection.channel()
            try:
                await channel.exchange_delete(name)
            except aio_pika.exceptions.AMQPError:
                pass
    finally:
        await connection.close()
