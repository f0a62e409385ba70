"""Consumes the instance's fanout queue (`adapters/fanout_queue.py`) into the hub.

Messages are consumed without acks because they are only doorbells: whatever
is lost (purged, dropped at the bound, in flight during a reconnect) is read
from Postgres by gap fill or the head poll. A robust channel re-declares the
consumer after a broker reconnect.

A message is one FanoutBatch per org; each frame is handed to the hub, which
decodes it once and offers it to every local subscription of its topic. A
single KhalaFrame body (an older projector) is still accepted. Each message is
delivered in one consumer span continuing the projector's trace (its
`traceparent` header): one span per batch, no per-frame tracing work.
"""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from opentelemetry.trace import SpanKind

from khala_common.telemetry import continued, extract_context, tracer
from khala_common.topology import TYPE_HEADER
from khala_gateway import metrics
from khala_gateway.adapters.fanout_queue import FanoutQueue
from khala_gateway.usecases.hub import Hub
from openagents.sync.v1.frames_pb2 import FanoutBatch

BATCH_TYPE = FanoutBatch.DESCRIPTOR.full_name
_tracer = tracer("khala_gateway.fanout")


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
        headers = message.headers or {}
        with (
            continued(extract_context(headers)),
            _tracer.start_as_current_span("fanout deliver", kind=SpanKind.CONSUMER),
        ):
            self._deliver(message, headers.get(TYPE_HEADER) == BATCH_TYPE)

    def _deliver(self, message: AbstractIncomingMessage, batch: bool) -> None:
        """Hand the message's frames to the hub (which offers them to the sockets)."""
        if not batch:
            self._hub.on_fanout(message.body)
            return
        try:
            frames = FanoutBatch.FromString(message.body).frames
        except Exception:
            metrics.FANOUT_UNDECODABLE.inc()
            return
        for frame in frames:
            self._hub.on_fanout(frame)
