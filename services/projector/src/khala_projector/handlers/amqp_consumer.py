"""AMQP edge: deliveries of `khala.projector` to the Projector.

Guarantees:
- Manual ack, only after the projection transaction committed (or the event
  was found to be a duplicate). Nothing is acked on failure.
- Sequential, in arrival order per stream: one task handles the buffered
  deliveries (at most prefetch) round by round. A round's deliveries are
  grouped by stream (each stream's in arrival order) and all groups share one
  transaction and one publish; if that joint attempt fails, each stream is
  retried on its own so one bad stream cannot hold the others back.
- Never dropped silently: a body that is not a valid RuntimeEvent, or whose
  processing raises, is rejected with requeue (after a back-off for processing
  errors); after `x-delivery-limit` rejections RabbitMQ dead-letters it to
  `khala.projector.dlq`. Every rejection and every dead-lettering is counted.
  A dead-lettered valid event is not lost for the projection: the stream's
  next event reveals the gap and ReadStream supplies it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from khala_common.logs import get_logger
from khala_common.telemetry import extract_context, tracer
from khala_projector import metrics
from khala_projector.domain.events import InvalidEvent, StreamRef, decode_event
from khala_projector.projector import Projector
from openagents.runtime.v1.events_pb2 import RuntimeEvent

MAX_RETRY_DELAY_MS = 5_000

log = get_logger("projector.consumer")
_tracer = tracer("khala_projector.consumer")


@dataclass(frozen=True)
class _Delivery:
    message: AbstractIncomingMessage
    event: RuntimeEvent
    stream: StreamRef


class EventConsumer:
    """Consumes runtime events and hands them, per stream, to the Projector."""

    def __init__(
        self,
        queue: AbstractQueue,
        projector: Projector,
        *,
        batch_max: int,
        delivery_limit: int,
        retry_delay_ms: int,
    ) -> None:
        self._queue = queue
        self._projector = projector
        self._batch_max = batch_max
        self._delivery_limit = delivery_limit
        self._retry_delay_ms = retry_delay_ms
        # None is the stop marker put by `stop`.
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._consumer_tag: str | None = None

    @property
    def running(self) -> bool:
        """Whether the broker consumer is registered and the processing task alive."""
        return self._consumer_tag is not None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the processing task, then register the broker consumer."""
        self._task = asyncio.create_task(self._run(), name="khala-projector-consumer")
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop deliveries, let the current round finish (up to `grace_s`), then cancel."""
        if self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
            self._consumer_tag = None
        if self._task is None:
            return
        self._inbox.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # No await before the put: deliveries enter the inbox in delivery order.
        self._inbox.put_nowait(message)

    async def _run(self) -> None:
        while True:
            batch = await self._next_round()
            if batch is None:
                return
            await self._handle(batch)

    async def _next_round(self) -> list[AbstractIncomingMessage] | None:
        first = await self._inbox.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self._batch_max and not self._inbox.empty():
            item = self._inbox.get_nowait()
            if item is None:
                self._inbox.put_nowait(None)
                break
            batch.append(item)
        return batch

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        deliveries: list[_Delivery] = []
        for message in batch:
            try:
                event, stream = decode_event(message.body)
            except InvalidEvent as exc:
                await self._reject(message, "invalid", str(exc))
                continue
            deliveries.append(_Delivery(message, event, stream))
        groups = _by_stream(deliveries)
        if len(groups) > 1 and await self._attempt_many(groups) is None:
            return
        for group in groups:
            await self._project(group)

    async def _attempt_many(self, groups: list[list[_Delivery]]) -> Exception | None:
        """Project and ack several streams' groups together; returns the error instead of raising."""
        context = extract_context(groups[0][0].message.headers)
        with _tracer.start_as_current_span("project", context=context) as span:
            span.set_attribute("khala.streams", len(groups))
            span.set_attribute("khala.events", sum(len(group) for group in groups))
            try:
                await self._projector.project_many(
                    [(group[0].stream, [d.event for d in group]) for group in groups]
                )
            except Exception as exc:
                span.record_exception(exc)
                log.info("joint projection failed; retrying stream by stream", error=repr(exc))
                return exc
        for group in groups:
            for delivery in group:
                await _settle(delivery.message.ack())
        return None

    async def _project(self, group: list[_Delivery]) -> None:
        error = await self._attempt(group)
        if error is None:
            return
        if len(group) == 1:
            failures = [(group[0], error)]
        else:
            # Retry one by one so one bad delivery cannot take its neighbours down.
            failures = []
            for delivery in group:
                single_error = await self._attempt([delivery])
                if single_error is not None:
                    failures.append((delivery, single_error))
        if failures:
            await self._requeue_after_backoff(failures)

    async def _attempt(self, group: list[_Delivery]) -> Exception | None:
        """Project and ack `group`; returns the error instead of raising."""
        stream = group[0].stream
        context = extract_context(group[0].message.headers)
        with _tracer.start_as_current_span("project", context=context) as span:
            span.set_attribute("khala.stream_id", stream.stream_id)
            span.set_attribute("khala.events", len(group))
            try:
                await self._projector.project(stream, [d.event for d in group])
            except Exception as exc:
                span.record_exception(exc)
                return exc
        for delivery in group:
            await _settle(delivery.message.ack())
        return None

    async def _requeue_after_backoff(self, failures: list[tuple[_Delivery, Exception]]) -> None:
        # One back-off per round: a Postgres or runtime outage should not burn
        # through the delivery limit in milliseconds.
        attempt = max(_delivery_count(d.message) for d, _ in failures)
        delay_ms = min(self._retry_delay_ms * 2**attempt, MAX_RETRY_DELAY_MS)
        for delivery, exc in failures:
            log.warning(
                "projection failed; requeueing",
                stream_id=delivery.stream.stream_id,
                seq=delivery.event.stream_seq,
                delivery_count=_delivery_count(delivery.message),
                error=repr(exc),
            )
        await asyncio.sleep(delay_ms / 1000)
        for delivery, exc in failures:
            await self._reject(delivery.message, "processing", repr(exc))

    async def _reject(self, message: AbstractIncomingMessage, reason: str, detail: str) -> None:
        metrics.MESSAGES_REJECTED.labels(reason).inc()
        if _delivery_count(message) >= self._delivery_limit:
            metrics.DEAD_LETTERED.labels(reason).inc()
            log.error(
                "message dead-lettered to khala.projector.dlq",
                message_id=message.message_id,
                reason=reason,
                detail=detail[:500],
            )
        elif reason == "invalid":
            log.warning(
                "invalid message rejected", message_id=message.message_id, detail=detail[:500]
            )
        await _settle(message.reject(requeue=True))


def _delivery_count(message: AbstractIncomingMessage) -> int:
    """Earlier failed deliveries (RabbitMQ quorum queues' x-delivery-count)."""
    value = (message.headers or {}).get("x-delivery-count")
    return int(value) if isinstance(value, int) else 0


def _by_stream(deliveries: list[_Delivery]) -> list[list[_Delivery]]:
    """The deliveries of each stream in arrival order; streams by first arrival."""
    groups: dict[str, list[_Delivery]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.stream.stream_id, []).append(delivery)
    return list(groups.values())


async def _settle(settle: Awaitable[object]) -> None:
    """Await an ack/reject; a closed channel means the broker will redeliver anyway."""
    try:
        await settle
    except Exception as exc:
        log.warning("ack/reject failed; the broker will redeliver", error=repr(exc))
