"""The instance's own fanout queue: bindings per org and the consumer.

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

The projector publishes one FanoutBatch per org (routing key `org.<org>`), so
the queue is bound once per org that any held topic belongs to (reference
counted over the topics), and the hub drops frames of topics nobody here holds.
A single KhalaFrame body (an older projector) is still accepted.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue

from khala_common.broker import Broker
from khala_common.topology import TYPE_HEADER, fanout_key
from khala_gateway import metrics
from khala_gateway.delivery.hub import Hub
from openagents.sync.v1.frames_pb2 import FanoutBatch

BATCH_TYPE = FanoutBatch.DESCRIPTOR.full_name

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
        self._key_refs: dict[str, int] = {}  # org routing key -> bound topics holding it
        self._key_locks: dict[str, asyncio.Lock] = {}

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
        if (message.headers or {}).get(TYPE_HEADER) != BATCH_TYPE:
            self._hub.on_fanout(message.body)
            return
        try:
            frames = FanoutBatch.FromString(message.body).frames
        except Exception:
            metrics.FANOUT_UNDECODABLE.inc()
            return
        for frame in frames:
            self._hub.on_fanout(frame)

    async def bind(self, topic: str) -> None:
        """Route the frames of the topic's org to this instance (one binding per org)."""
        assert self._queue is not None and self._exchange is not None
        key = fanout_key(topic)
        async with self._key_lock(key):
            if not self._key_refs.get(key):
                # During a broker reconnect this would wait; the subscriber gets
                # `internal` instead.
                await asyncio.wait_for(
                    self._queue.bind(self._exchange, routing_key=key), BROKER_CALL_TIMEOUT_S
                )
            self._key_refs[key] = self._key_refs.get(key, 0) + 1

    async def unbind(self, topic: str) -> None:
        """Drop the topic's hold on its org binding (unbound after the last topic)."""
        assert self._queue is not None and self._exchange is not None
        key = fanout_key(topic)
        async with self._key_lock(key):
            refs = self._key_refs.get(key, 0) - 1
            if refs > 0:
                self._key_refs[key] = refs
                return
            self._key_refs.pop(key, None)
            await asyncio.wait_for(
                self._queue.unbind(self._exchange, routing_key=key), BROKER_CALL_TIMEOUT_S
            )

    def _key_lock(self, key: str) -> asyncio.Lock:
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        return lock
