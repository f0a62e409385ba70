"""Outbox relay: publishes committed runtime events to `khala.runtime.events`.

Guarantee: at-least-once delivery, in commit order per stream.

* Every accepted event has an outbox row written in the transaction that
  appended it (see `service.py`), so nothing committed can be missed.
* One leader per deployment: the relay that holds `pg_try_advisory_lock`
  (on its own dedicated connection) publishes; the others wait and retry.
  If that connection dies, Postgres releases the lock and another relay
  takes over.
* Rows are read unpublished, in id order. Within one stream ids follow commit
  order: an append takes its ids only after locking the run row, i.e. after
  the previous append of that stream committed. So a row never becomes visible
  before an earlier row of its stream.
* Linger: two drains start at least `linger_s` apart, so under load one drain
  carries a few milliseconds of commits; after a quiet spell a commit's NOTIFY
  starts a drain at once.
* Partitioned batches: the rows of one drain (up to 500) are grouped by the
  projector partition of their stream (`partition_of`, a stable hash), and
  each partition's rows travel in id order as RuntimeEventBatch messages
  (routing key `partition.<k>`, at most MAX_BATCH_EVENTS / MAX_BATCH_BYTES
  each). One stream lives in one partition, so its events stay in order. The
  messages are published on one publisher-confirming channel: publishes are
  started in order and reach the channel's FIFO lock without suspending (the
  exchange is declared first), so RabbitMQ keeps that order; only the confirms
  are awaited together. Publishes are mandatory: a partition no queue is bound
  to (runtime and projector disagreeing on the partition count) fails loudly
  as a publish failure instead of dropping events.
* Rows are marked published only after the broker confirmed their message
  and every earlier message of their partition: from a partition's first
  failure on, its rows are republished, in order, on the next attempt. A crash
  between confirm and mark republishes too. Consumers dedupe by `stream_seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_common.topology import partition_key, partition_of
from khala_runtime import metrics
from khala_runtime.storage import SCHEMA
from khala_runtime.storage import outbox as outbox_sql
from khala_runtime.storage.events import OUTBOX_CHANNEL
from khala_runtime.storage.outbox import OutboxRow
from openagents.runtime.v1.events_pb2 import RuntimeEvent, RuntimeEventBatch

# A fixed 64-bit key naming "the runtime outbox relay" within the database.
LOCK_KEY = 0x6B68616C615F6F62  # b"khala_ob"
BATCH_SIZE = 500
MAX_BATCH_EVENTS = 200
MAX_BATCH_BYTES = 512 * 1024
PUBLISH_TIMEOUT_S = 30.0
PRUNE_EVERY_S = 60.0
RETENTION_S = 3600.0
_TYPE_NAME = RuntimeEventBatch.DESCRIPTOR.full_name

log = get_logger("outbox_relay")


class OutboxRelay:
    """Moves outbox rows to the broker while this process is the leader."""

    def __init__(
        self,
        dsn: str,
        broker: Broker,
        *,
        poll_interval_s: float,
        partitions: int,
        batch_size: int = BATCH_SIZE,
        linger_s: float = 0.0,
    ) -> None:
        self._dsn = dsn
        self._partitions = partitions
        self._linger_s = linger_s
        self._broker = broker
        self._poll_s = poll_interval_s
        self._batch_size = batch_size
        self._last_prune = 0.0
        self._last_drain = 0.0
        self.is_leader = False

    async def run(self) -> None:
        """Connect the broker, then lead (or wait to lead) until cancelled."""
        await self._retry(self._connect_broker)
        await self._retry(self._session)

    async def _retry(self, step: Any) -> None:
        backoff = 0.2
        while True:
            try:
                await step()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay step failed", step=step.__name__, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _connect_broker(self) -> None:
        if not self._broker.is_connected:
            await self._broker.close()
            await self._broker.connect()
        await self._broker.exchange(self._broker.topology.runtime_events)

    async def _session(self) -> None:
        """One leadership session on a dedicated connection (raises when it ends)."""
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            server_settings={"search_path": SCHEMA, "application_name": "khala-runtime-outbox"},
        )
        wake = asyncio.Event()

        def ring(*_: object) -> None:
            wake.set()

        try:
            conn.add_termination_listener(ring)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                metrics.OUTBOX_BACKLOG.set(await outbox_sql.backlog(conn))
                await asyncio.sleep(self._poll_s)
            self._set_leader(True)
            await conn.add_listener(OUTBOX_CHANNEL, ring)
            await self._lead(conn, wake)
        finally:
            self._set_leader(False)
            await _close(conn)

    async def _lead(self, conn: asyncpg.Connection, wake: asyncio.Event) -> None:
        failures = 0
        while True:
            if conn.is_closed():
                raise ConnectionError("relay connection lost; leadership released")
            wake.clear()
            self._last_drain = time.monotonic()
            if await self.drain(conn):
                failures = 0
            else:
                failures += 1
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                try:
                    await self._connect_broker()
                except Exception as exc:
                    log.warning("broker reconnect failed", error=repr(exc))
                continue
            await self._maybe_prune(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._poll_s)
            # Under load, let the next drain gather `linger_s` of commits (after a
            # quiet spell it starts at once: the wait is measured from the last drain).
            await asyncio.sleep(max(0.0, self._last_drain + self._linger_s - time.monotonic()))

    async def drain(self, conn: asyncpg.Connection) -> bool:
        """Publish unpublished rows until none are left; False if a publish failed."""
        while True:
            rows = await outbox_sql.fetch_unpublished(conn, self._batch_size)
            if not rows:
                metrics.OUTBOX_BACKLOG.set(0)
                return True
            confirmed = await self._publish(rows)
            if confirmed:
                await outbox_sql.mark_published(conn, [row.id for row in confirmed])
                metrics.OUTBOX_PUBLISHED.inc(len(confirmed))
            if len(confirmed) < len(rows):
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                return False
            if len(rows) < self._batch_size:
                # All there was: a row committed since rang the doorbell after
                # `wake` was cleared, so the leader drains again at once.
                metrics.OUTBOX_BACKLOG.set(0)
                return True
            metrics.OUTBOX_BACKLOG.set(await outbox_sql.backlog(conn))

    async def _publish(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """Publish rows as partition batches, in order; the rows whose message and
        every earlier message of their partition the broker confirmed."""
        exchange = self._broker.topology.runtime_events
        batches = partition_batches(rows, self._partitions)
        try:
            await self._broker.exchange(exchange)
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                results = await asyncio.gather(
                    *(
                        self._broker.publish_raw(
                            exchange,
                            partition_key(batch.partition),
                            batch.body(),
                            type_name=_TYPE_NAME,
                            message_id=batch.rows[0].event_id,
                            mandatory=True,
                        )
                        for batch in batches
                    ),
                    return_exceptions=True,
                )
        except Exception as exc:
            log.warning("outbox publish failed", error=repr(exc), rows=len(rows))
            return []
        confirmed: list[OutboxRow] = []
        failed: set[int] = set()
        for batch, result in zip(batches, results, strict=True):
            if isinstance(result, BaseException) or batch.partition in failed:
                if batch.partition not in failed:
                    log.warning("outbox publish failed", error=repr(result),
                                partition=batch.partition, rows=len(batch.rows))
                failed.add(batch.partition)
                continue
            confirmed.extend(batch.rows)
        now_ms = time.time() * 1000
        for row in confirmed:
            metrics.PUBLISH_LATENCY.observe(max(0.0, (now_ms - row.created_at_ms) / 1000))
        return confirmed

    async def _maybe_prune(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        deleted = await outbox_sql.prune_published(conn, RETENTION_S, 10_000)
        if deleted:
            log.info("pruned published outbox rows", rows=deleted)

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            log.info("outbox relay leadership", leader=leader)
        self.is_leader = leader
        metrics.OUTBOX_LEADER.set(1 if leader else 0)


async def _close(conn: asyncpg.Connection) -> None:
    """Close the dedicated connection (releasing the advisory lock)."""
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except BaseException:
        conn.terminate()


class PartitionBatch:
    """Outbox rows of one partition that travel in one broker message."""

    __slots__ = ("events", "partition", "rows", "size")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.rows: list[OutboxRow] = []
        self.events: list[RuntimeEvent] = []
        self.size = 0

    def body(self) -> bytes:
        """The serialized RuntimeEventBatch."""
        return RuntimeEventBatch(events=self.events).SerializeToString()


def partition_batches(rows: Sequence[OutboxRow], partitions: int) -> list[PartitionBatch]:
    """Rows grouped by their stream's partition (each group in id order), cut into
    messages of at most MAX_BATCH_EVENTS events and about MAX_BATCH_BYTES."""
    open_batches: dict[int, PartitionBatch] = {}
    batches: list[PartitionBatch] = []
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
