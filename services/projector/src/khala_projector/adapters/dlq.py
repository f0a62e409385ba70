"""The broker side of `khala-projector dlq list | replay`: inspect and re-drive
khala.projector.dlq (what a message is and why it died: domain/dead_letters.py).

Guarantees:
- `list` never consumes: it takes up to N messages unacknowledged on its own
  channel and closes the channel, which returns them all to the DLQ (a quorum
  queue may then hold them in another order).
- `replay` is at-least-once and never loses a message: each one is published
  to `khala.runtime.events` with its original routing key, body, message_id
  and type header, and acked on the DLQ only after the broker confirmed the
  publish. A crash in between replays it twice, which the projector skips as
  a duplicate by checkpoint. The dead-lettering headers (x-death, ...) are
  dropped, so the message starts again with a fresh delivery count.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from khala_common.topology import Topology
from khala_projector.domain.dead_letters import DeadLetter, describe, replay_headers


class DeadLetterQueue:
    """A connection to the broker for DLQ operations (its own connection)."""

    def __init__(self, url: str, topology: Topology) -> None:
        self._url = url
        self._topology = topology
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> DeadLetterQueue:
        self._connection = await aio_pika.connect(self._url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    @property
    def _conn(self) -> aio_pika.abc.AbstractConnection:
        if self._connection is None:
            raise RuntimeError("DeadLetterQueue is not open")
        return self._connection

    async def depth(self) -> int:
        """Messages waiting in the DLQ."""
        channel = await self._conn.channel()
        try:
            queue = await channel.declare_queue(self._topology.projector_dlq, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def peek(self, limit: int) -> list[DeadLetter]:
        """Up to `limit` messages from the head of the DLQ, left in place."""
        channel = await self._conn.channel()
        try:
            queue = await channel.declare_queue(self._topology.projector_dlq, passive=True)
            letters = []
            for _ in range(limit):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(_describe(message))
            return letters
        finally:
            # Closing the channel returns every unacked message to the queue.
            await channel.close()

    async def replay(self, limit: int) -> list[DeadLetter]:
        """Move up to `limit` messages (0 = all there now) back to khala.runtime.events.

        Bounded by the depth at the start, so a message that fails again and
        returns to the DLQ meanwhile is not replayed in a loop.
        """
        channel = await self._conn.channel(publisher_confirms=True)
        replayed: list[DeadLetter] = []
        try:
            queue = await channel.declare_queue(self._topology.projector_dlq, passive=True)
            depth = int(queue.declaration_result.message_count or 0)
            limit = depth if limit <= 0 else min(limit, depth)
            exchange = await channel.get_exchange(self._topology.runtime_events, ensure=True)
            while len(replayed) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letter = _describe(message)
                await exchange.publish(
                    aio_pika.Message(
                        message.body,
                        headers=replay_headers(message.headers or {}),
                        content_type=message.content_type,
                        message_id=message.message_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=letter.routing_key,
                )
                await message.ack()
                replayed.append(letter)
        finally:
            await channel.close()
        return replayed


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    return describe(
        message.body, message.headers or {}, message.routing_key or "", message.message_id
    )
