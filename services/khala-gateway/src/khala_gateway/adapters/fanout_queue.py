"""The instance's own fanout queue: its declaration and the bindings per org.

One queue per gateway process (`<prefix>khala.fanout.gw.<instance>`), bounded
(drop-head). It is auto-delete, so it goes when this process's consumer does,
and expires after `QUEUE_EXPIRES_MS` unused (a broker restart without the
gateway). It is not declared `exclusive`, only so that operators and tests can
inspect or purge it from another connection; nothing else consumes it. It is
durable only because RabbitMQ deprecates transient non-exclusive queues; the
messages themselves are transient. A robust channel re-declares the queue and
its bindings after a broker reconnect.

The projector publishes one FanoutBatch per org (routing key `org.<org>`), so
the queue is bound once per org that any held topic belongs to (reference
counted over the topics); the hub drops frames of topics nobody here holds.
`FanoutQueue` is the Binder of `Bindings`.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractExchange, AbstractQueue

from khala_common.broker import Broker
from khala_common.topology import fanout_key

BROKER_CALL_TIMEOUT_S = 5.0
QUEUE_EXPIRES_MS = 300_000


class FanoutQueue:
    """Declares the queue and binds/unbinds topics' org routing keys on it."""

    def __init__(self, broker: Broker, queue_name: str, max_length: int) -> None:
        self._broker = broker
        self.queue_name = queue_name
        self._max_length = max_length
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._key_refs: dict[str, int] = {}  # org routing key -> bound topics holding it
        self._key_locks: dict[str, asyncio.Lock] = {}

    async def declare(self) -> AbstractQueue:
        """Declare the exchange and the queue (once); returns the queue to consume."""
        if self._queue is None:
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
        return self._queue

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
