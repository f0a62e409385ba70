"""Outbox relay: publishes committed runtime events to `khala.runtime.events`.

Guarantee: at-least-once delivery, in commit order per stream.

* Every accepted event has an outbox row written in the transaction that
  appended it (see `write_path.py`), so nothing committed can be missed.
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
* Partitioned batches: the rows of one drain (up to 500) go to the broker in
  id order through `adapters/outbox_publisher.py`, one RuntimeEventBatch per
  projector partition touched (a stream lives in one partition, so its events
  stay in order), on one publisher-confirming channel, mandatory (a partition
  no queue is bound to fails loudly instead of dropping events).
* Rows are marked published only after the broker confirmed their message
  and every earlier message of their partition: from a partition's first
  failure on, its rows are republished, in order, on the next attempt. A crash
  between confirm and mark republishes too. Consumers dedupe by `stream_seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_runtime import metrics
from khala_runtime.adapters.outbox_publisher import EventPublisher
from khala_runtime.storage import SCHEMA
from khala_runtime.storage import outbox as outbox_sql
from khala_runtime.storage.events import OUTBOX_CHANNEL

# A fixed 64-bit key naming "the runtime outbox relay" within the database.
LOCK_KEY = 0x6B68616C615F6F62  # b"khala_ob"
BATCH_SIZE = 500
PRUNE_EVERY_S = 60.0
RETENTION_S = 3600.0

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
        self._linger_s = linger_s
        self._publisher = EventPublisher(broker, partitions=partitions)
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
        await self._publisher.connect()

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
            confirmed = await self._publisher.publish(rows)
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
