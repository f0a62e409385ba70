"""`khala-projector dlq list | replay`: inspect and re-drive khala.projector.dlq.

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

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from khala_common.topology import TYPE_HEADER, Topology
from khala_projector.domain.events import InvalidEvent, decode_event

# Headers RabbitMQ adds when dead-lettering or redelivering; not carried over.
_DEAD_LETTER_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ, described for an operator."""

    message_id: str
    routing_key: str
    reason: str
    deaths: int
    queue: str
    type: str
    bytes: int
    stream_id: str = ""
    stream_seq: int = 0
    event_type: str = ""
    event_id: str = ""
    invalid: str = ""

    def to_json(self) -> str:
        """One JSON object (a line of `dlq list`)."""
        return json.dumps(asdict(self), sort_keys=True)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def original_routing_key(headers: Mapping[str, Any], fallback: str) -> str:
    """The routing key the message had before it was dead-lettered."""
    keys = _first_death(headers).get("routing-keys")
    if isinstance(keys, list) and keys:
        return _text(keys[0])
    return fallback


def describe(
    body: bytes, headers: Mapping[str, Any], routing_key: str, message_id: str | None
) -> DeadLetter:
    """What a dead-lettered message is and why it died."""
    death = _first_death(headers)
    letter = DeadLetter(
        message_id=message_id or "",
        routing_key=original_routing_key(headers, routing_key),
        reason=_text(death.get("reason") or headers.get("x-first-death-reason")),
        deaths=int(death.get("count") or 0),
        queue=_text(death.get("queue") or headers.get("x-first-death-queue")),
        type=_text(headers.get(TYPE_HEADER)),
        bytes=len(body),
    )
    try:
        event, stream = decode_event(body)
    except InvalidEvent as exc:
        return DeadLetter(**{**asdict(letter), "invalid": str(exc)})
    return DeadLetter(
        **{
            **asdict(letter),
            "stream_id": stream.stream_id,
            "stream_seq": event.stream_seq,
            "event_type": event.type,
            "event_id": event.event_id,
        }
    )


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message's headers without the dead-lettering ones."""
    return {k: v for k, v in headers.items() if k not in _DEAD_LETTER_HEADERS}


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
