"""Consumes the instance's fanout queue (`adapters/fanout_queue.py`) into the hub.

Messages are consumed without acks because they are only doorbells: whatever
is lost (purged, dropped at the bound, in flight during a reconnect) is read
from Postgres by gap fill or the head poll. A robust channel re-declares the
consumer after a broker reconnect.

A message is one FanoutBatch per org; each frame is handed to the hub, which
decodes it once and offers it to every local subscription of its topic. A
single KhalaFrame body (an older projector) is still accepted.
"""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from khala_common.topology import TYPE_HEADER
from khala_gateway import metrics
from khala_gateway.adapters.fanout_queue import FanoutQueue
from khala_gateway.usecases.hub import Hub
from openagents.sync.v1.frames_pb2 import FanoutBatch

BATCH_TYPE = FanoutBatch.DESCRIPTOR.full_name


class FanoutConsumer:
    """Consumes the fanout queue and hands every frame to the hub."""

    def __init__(self, queue: FanoutQueue, hub: Hub) -> None:
        self._fanout_queue = queue
        self._hub = hub
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        """Declare the queue (if not yet), then start consuming."""
        self._queue = await self._fanout_queue.declare()
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
