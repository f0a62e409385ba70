"""Broker side of the outbox relay: committed outbox rows go to
`khala.runtime.events` as per-partition RuntimeEventBatch messages.

Guarantee (the relay builds at-least-once, in-order delivery on it):

* Rows are grouped by the projector partition of their stream (`partition_of`,
  a stable hash); each partition's rows travel in the order given (the relay
  passes them in id order) as RuntimeEventBatch messages (routing key
  `partition.<k>`, at most MAX_BATCH_EVENTS / about MAX_BATCH_BYTES each). One
  stream lives in one partition, so its events stay in order.
* All messages go out on one publisher-confirming channel: publishes are
  started in order and reach the channel's FIFO lock without suspending (the
  exchange is declared first), so RabbitMQ keeps that order; only the confirms
  are awaited together.
* Publishes are mandatory: a partition no queue is bound to (runtime and
  projector disagreeing on the partition count) fails loudly as a publish
  failure instead of dropping events.
* `publish` returns only the rows whose message and every earlier message of
  their partition the broker confirmed; from a partition's first failure on,
  its rows are left for the next attempt, so a retry republishes them in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry.trace import SpanKind

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_common.telemetry import (
    TRACE_CONTEXTS_HEADER,
    carrier_of,
    context_of,
    continued,
    current_traceparent,
    links_of,
    tracer,
)
from khala_common.topology import partition_key, partition_of
from khala_runtime import metrics
from openagents.runtime.v1.events_pb2 import RuntimeEvent, RuntimeEventBatch

MAX_BATCH_EVENTS = 200
MAX_BATCH_BYTES = 512 * 1024
PUBLISH_TIMEOUT_S = 30.0
_TYPE_NAME = RuntimeEventBatch.DESCRIPTOR.full_name

log = get_logger("outbox_relay")
_tracer = tracer("khala_runtime.outbox_publisher")


class Queued(Protocol):
    """A committed outbox row as the publisher needs it."""

    @property
    def traceparent(self) -> str | None: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def event_id(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def created_at_ms(self) -> int: ...


RowT = TypeVar("RowT", bound=Queued)


class EventPublisher:
    """Publishes outbox rows as partition batches on one confirming broker channel."""

    def __init__(self, broker: Broker, *, partitions: int) -> None:
        self._broker = broker
        self._partitions = partitions

    async def connect(self) -> None:
        """(Re)connect the broker if needed and declare the events exchange."""
        if not self._broker.is_connected:
            await self._broker.close()
            await self._broker.connect()
        await self._broker.exchange(self._broker.topology.runtime_events)

    async def publish(self, rows: Sequence[RowT]) -> list[RowT]:
        """Publish rows as partition batches, in order; the rows whose message and
        every earlier message of their partition the broker confirmed."""
        exchange = self._broker.topology.runtime_events
        batches = partition_batches(rows, self._partitions)
        try:
            await self._broker.exchange(exchange)
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                results = await asyncio.gather(
                    *(self._publish_batch(exchange, batch) for batch in batches),
                    return_exceptions=True,
                )
        except Exception as exc:
            log.warning("outbox publish failed", error=repr(exc), rows=len(rows))
            return []
        confirmed: list[RowT] = []
        failed: set[int] = set()
        for batch, result in zip(batches, results, strict=True):
            if isinstance(result, BaseException) or batch.partition in failed:
                if batch.partition not in failed:
                    log.warning(
                        "outbox publish failed",
                        error=repr(result),
                        partition=batch.partition,
                        rows=len(batch.rows),
                    )
                failed.add(batch.partition)
                continue
            confirmed.extend(batch.rows)
        now_ms = time.time() * 1000
        for row in confirmed:
            latency_s = max(0.0, (now_ms - row.created_at_ms) / 1000)
            metrics.PUBLISH_LATENCY.observe(latency_s, _exemplar(row.traceparent))
        return confirmed

    async def _publish_batch(self, exchange: str, batch: PartitionBatch[RowT]) -> None:
        """Publish one batch (its own task: gather). The batch names each event's
        W3C context (traceparent, request id as baggage) in TRACE_CONTEXTS_HEADER;
        a batch with traced events is published in a producer span continuing the
        first of them and linking the others. Untraced batches cost no span."""
        traced = [row for row in batch.rows if row.traceparent]
        if not traced:
            await self._publish_raw(exchange, batch, _contexts(batch.rows, None))
            return
        first = traced[0]
        parents = (row.traceparent for row in traced[1:])
        others = {parent for parent in parents if parent and parent != first.traceparent}
        with (
            continued(context_of(first.traceparent, first.request_id)),
            _tracer.start_as_current_span(
                "outbox publish", kind=SpanKind.PRODUCER, links=links_of(others)
            ) as span,
        ):
            span.set_attribute("khala.partition", batch.partition)
            span.set_attribute("khala.events", len(batch.rows))
            await self._publish_raw(exchange, batch, _contexts(batch.rows, first.traceparent))

    async def _publish_raw(
        self, exchange: str, batch: PartitionBatch[RowT], headers: dict[str, Any] | None
    ) -> None:
        await self._broker.publish_raw(
            exchange,
            partition_key(batch.partition),
            batch.body(),
            type_name=_TYPE_NAME,
            message_id=batch.rows[0].event_id,
            mandatory=True,
            headers=headers,
        )


def _contexts(rows: Sequence[Queued], relayed: str | None) -> dict[str, Any] | None:
    """The TRACE_CONTEXTS_HEADER of a batch: each event's W3C carrier. Events of
    the trace the relay span continues (`relayed`) name the relay span (the chain
    append -> relay -> projector); the others keep their own traceparent."""
    relay = current_traceparent() if relayed else None
    contexts = {
        row.event_id: carrier_of(
            relay if relay and _same_trace(row.traceparent, relayed) else row.traceparent,
            row.request_id,
        )
        for row in rows
        if row.traceparent or row.request_id
    }
    return {TRACE_CONTEXTS_HEADER: contexts} if contexts else None


def _same_trace(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return a.split("-")[1:2] == b.split("-")[1:2]


def _exemplar(traceparent: str | None) -> dict[str, str] | None:
    """Exemplar labels naming the trace of a stored traceparent."""
    if not traceparent or traceparent.count("-") != 3:
        return None
    return {"trace_id": traceparent.split("-")[1]}


class PartitionBatch(Generic[RowT]):
    """Outbox rows of one partition that travel in one broker message."""

    __slots__ = ("events", "partition", "rows", "size")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.rows: list[RowT] = []
        self.events: list[RuntimeEvent] = []
        self.size = 0

    def body(self) -> bytes:
        """The serialized RuntimeEventBatch."""
        return RuntimeEventBatch(events=self.events).SerializeToString()


def partition_batches(rows: Sequence[RowT], partitions: int) -> list[PartitionBatch[RowT]]:
    """Rows grouped by their stream's partition (each group in the given order), cut
    into messages of at most MAX_BATCH_EVENTS events and about MAX_BATCH_BYTES."""
    open_batches: dict[int, PartitionBatch[RowT]] = {}
    batches: list[PartitionBatch[RowT]] = []
    for row in rows:
        event = RuntimeEvent.FromString(row.body)
        partition = partition_of(event.stream_id, partitions)
        batch = open_batches.get(partition)
        full = batch is not None and (
            len(batch.rows) >= MAX_BATCH_EVENTS or batch.size + len(row.body) > MAX_BATCH_BYTES
        )
        if batch is None or full:
            batch = open_batches[partition] = PartitionBatch(partition)
            batches.append(batch)
        batch.rows.append(row)
        batch.events.append(event)
        batch.size += len(row.body)
    return batches
