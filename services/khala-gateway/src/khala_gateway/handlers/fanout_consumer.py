"""The instance's own fanout queue: bindings per topic and the consumer.

One queue per gateway process (`<prefix>khala.fanout.gw.<instance>`), bounded
(drop-head). It is auto-delete, so it goes when this process's consumer does,
and expires after `QUEUE_EXPIRES_MS` unused (a broker restart without the
gateway). It is not declared `exclusive`, only so that operators and tests can
inspect or purge it from another connection; nothing else consumes it. It is
durable only because RabbitMQ deprecates transient non-exclusive queues; the
messages themselves are transient.

Messages are consumed without acks because they are only doorbells: whatever
is lost (purged, dropped at the bound, in flight during a reconnect) is read
from Postgres by gap fill or the head poll. A robust channel re-declares the
queue, its bindings and the consumer after a broker reconnect.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue

from khala_common.broker import Broker
from khala_gateway.delivery.hub import Hub

BROKER_CALL_TIMEOUT_S = 5.0
QUEUE_EXPIRES_MS = 300_000


class FanoutConsumer:
    """Declares the queue, binds/unbinds topics (the Binder of Bindings) and consumes."""

    def __init__(self, broker: Broker, hub: Hub, queue_name: str, max_length: int) -> None:
        self._broker = broker
        self._hub = hub
        self.queue_name = queue_name
        self._max_length = max_length
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        """Declare the exchange and queue, then start consuming."""
        self._exchange = await self._broker.exchange(self._broker.topology.fanout)
        self._queue = await self._broker.channel.declare_queue(
            self.queue_name,
            durable=True,
            auto_delete=True,
            arguments={
                "x-max-length": self._max_length,
                "x-overflow": "drop-head",
                "x-expires": QUEUE_EXPIRES_MS,
            },
        )
        self._tag = await self._queue.consume(self._on_message, no_ack=True)

    async def stop(self) -> None:
        """Stop consuming (the queue goes with the connection)."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:
                pass
        self._tag = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._hub.on_fanout(message.body)

    async def bind(self, topic: str) -> None:
        """Route the topic's frames to this instance."""
        assert self._queue is not None and self._exchange is not None
        # During a broker reconnect this would wait; the subscriber gets `internal` instead.
        await asyncio.wait_for(
            self._queue.bind(self._exchange, routing_key=topic), BROKER_CALL_TIMEOUT_S
        )

    async def unbind(self, topic: str) -> None:
        """Stop routing the topic's frames to this instance."""
        assert self._queue is not None and self._exchange is not None
        await asyncio.wait_for(
            self._queue.unbind(self._exchange, routing_key=topic), BROKER_CALL_TIMEOUT_S
        )
