"""AMQP edge: deliveries of the projector's partition queues to the Projector.

Guarantees:
- Manual ack, once per message, only after every event it carries was
  committed (or found to be a duplicate). Nothing is acked on failure.
- Sequential, in arrival order per stream: one task handles the buffered
  deliveries of every partition this replica owns (at most prefetch messages)
  round by round. A stream lives in one partition, whose queue has a single
  active consumer, so its events arrive in order. A round's events are grouped
  by stream (each stream's in arrival order) and all groups share one
  transaction and one publish; if that joint attempt fails, each stream is
  retried on its own so one bad stream cannot hold the others back.
- A message carries one RuntimeEvent or a RuntimeEventBatch (the outbox
  relay's partition batch); its type header says which.
- Never dropped silently: a body that decodes to no valid event, or whose
  processing raises, is rejected with requeue (after a back-off for processing
  errors); after `x-delivery-limit` rejections RabbitMQ dead-letters it to
  `khala.projector.dlq`. Every rejection and every dead-lettering is counted.
  A dead-lettered valid event is not lost for the projection: the stream's
  next event reveals the gap and ReadStream supplies it; a redelivered batch's
  already-committed events are skipped as duplicates.
- Handing a partition over (`remove_queue`): the broker consumer is cancelled
  first, then every message already received from that queue is settled
  before the call returns, so the next owner starts after this one's last ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from opentelemetry.context import Context

from khala_common.logs import get_logger
from khala_common.telemetry import continued, extract_context, trace_contexts, tracer
from khala_common.topology import TYPE_HEADER
from khala_projector import metrics
from khala_projector.domain.events import InvalidEvent, StreamRef, decode_events
from khala_projector.usecases.projector import Projector
from openagents.runtime.v1.events_pb2 import RuntimeEvent

MAX_RETRY_DELAY_MS = 5_000
HANDOVER_TIMEOUT_S = 30.0

log = get_logger("projector.consumer")
_tracer = tracer("khala_projector.consumer")


@dataclass(frozen=True)
class _Delivery:
    """One event and the message that carried it (a batch carries several)."""

    message: AbstractIncomingMessage
    event: RuntimeEvent
    stream: StreamRef


class EventConsumer:
    """Consumes runtime events from the owned partition queues and hands them,
    per stream, to the Projector."""

    def __init__(
        self,
        projector: Projector,
        *,
        batch_max: int,
        delivery_limit: int,
        retry_delay_ms: int,
    ) -> None:
        self._projector = projector
        self._batch_max = batch_max
        self._delivery_limit = delivery_limit
        self._retry_delay_ms = retry_delay_ms
        # None is the stop marker put by `stop`.
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._tags: dict[str, tuple[AbstractQueue, str]] = {}
        self._unsettled: dict[str, int] = {}  # received, not yet acked/rejected, per queue
        self._origin: dict[int, str] = {}  # id(message) -> its queue, until settled
        self._settled = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether the processing task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def queues(self) -> list[str]:
        """Names of the queues consumed now."""
        return sorted(self._tags)

    async def start(self) -> None:
        """Start the processing task (queues are added as partitions are owned)."""
        self._task = asyncio.create_task(self._run(), name="khala-projector-consumer")

    async def add_queue(self, queue: AbstractQueue) -> None:
        """Register a broker consumer on `queue` (a partition this replica now owns)."""
        if queue.name in self._tags:
            return
        self._unsettled.setdefault(queue.name, 0)
        tag = await queue.consume(functools.partial(self._on_message, queue.name), no_ack=False)
        self._tags[queue.name] = (queue, tag)

    async def remove_queue(self, name: str, timeout_s: float = HANDOVER_TIMEOUT_S) -> None:
        """Cancel the consumer of `name` and wait until its received messages are settled."""
        entry = self._tags.pop(name, None)
        if entry is None:
            return
        queue, tag = entry
        with contextlib.suppress(Exception):
            await queue.cancel(tag)
        try:
            async with asyncio.timeout(timeout_s):
                while self._unsettled.get(name, 0) > 0:
                    self._settled.clear()
                    await self._settled.wait()
        except TimeoutError:
            # Still unsettled messages stay with this channel; the broker
            # redelivers them when it closes and the new owner skips duplicates.
            log.warning("partition handed over with unsettled messages", queue=name)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop deliveries, let the current round finish (up to `grace_s`), then cancel."""
        for name in list(self._tags):
            queue, tag = self._tags.pop(name)
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
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

    async def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        # No await before the put: deliveries enter the inbox in delivery order.
        self._unsettled[queue] = self._unsettled.get(queue, 0) + 1
        self._origin[id(message)] = queue
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
        carried: list[AbstractIncomingMessage] = []
        for message in batch:
            try:
                type_name = (message.headers or {}).get(TYPE_HEADER)
                decoded = decode_events(message.body, str(type_name) if type_name else None)
            except InvalidEvent as exc:
                await self._reject(message, "invalid", str(exc))
                continue
            carried.append(message)
            deliveries.extend(_Delivery(message, event, stream) for event, stream in decoded)
        groups = _by_stream(deliveries)
        failed: list[tuple[_Delivery, Exception]] = []
        if len(groups) < 2 or await self._attempt_many(groups) is not None:
            for group in groups:
                failed.extend(await self._project(group))
        await self._settle_round(carried, failed)

    async def _settle_round(
        self, carried: list[AbstractIncomingMessage], failed: list[tuple[_Delivery, Exception]]
    ) -> None:
        """Ack every message whose events all committed; requeue the others (once each)."""
        bad = {id(delivery.message) for delivery, _ in failed}
        for message in carried:
            if id(message) not in bad:
                await self._settle(message, message.ack())
        if failed:
            await self._requeue_after_backoff(failed)

    async def _attempt_many(self, groups: list[list[_Delivery]]) -> Exception | None:
        """Project several streams' groups together; returns the error instead of raising."""
        with continued(_trace_of(groups[0][0])), _tracer.start_as_current_span("project") as span:
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
        return None

    async def _project(self, group: list[_Delivery]) -> list[tuple[_Delivery, Exception]]:
        """Project one stream's group; the deliveries that still failed, with errors."""
        error = await self._attempt(group)
        if error is None:
            return []
        if len(group) == 1:
            return [(group[0], error)]
        # Retry one by one so one bad delivery cannot take its neighbours down.
        failures = []
        for delivery in group:
            single_error = await self._attempt([delivery])
            if single_error is not None:
                failures.append((delivery, single_error))
        return failures

    async def _attempt(self, group: list[_Delivery]) -> Exception | None:
        """Project `group` (one stream); returns the error instead of raising."""
        stream = group[0].stream
        with continued(_trace_of(group[0])), _tracer.start_as_current_span("project") as span:
            span.set_attribute("khala.stream_id", stream.stream_id)
            span.set_attribute("khala.events", len(group))
            try:
                await self._projector.project(stream, [d.event for d in group])
            except Exception as exc:
                span.record_exception(exc)
                return exc
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
        messages = {id(d.message): (d.message, exc) for d, exc in failures}
        for message, exc in messages.values():
            await self._reject(message, "processing", repr(exc))

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
        await self._settle(message, message.reject(requeue=True))

    async def _settle(self, message: AbstractIncomingMessage, settle: Awaitable[object]) -> None:
        """Await an ack/reject; a closed channel means the broker will redeliver anyway."""
        try:
            await settle
        except Exception as exc:
            log.warning("ack/reject failed; the broker will redeliver", error=repr(exc))
        finally:
            name = self._origin.pop(id(message), None)
            if name is not None:
                self._unsettled[name] = max(0, self._unsettled.get(name, 0) - 1)
                self._settled.set()


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


def _trace_of(delivery: _Delivery) -> Context:
    """The trace a delivery's projection continues: its event's own context (and
    request id) from the batch's TRACE_CONTEXTS_HEADER, else the message's."""
    headers = delivery.message.headers
    own = trace_contexts(headers).get(delivery.event.event_id)
    return extract_context(own if own is not None else headers)
