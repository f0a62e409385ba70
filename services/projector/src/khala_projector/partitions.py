"""Partition ownership: projector replicas share the partition queues.

Guarantees:
- A replica consumes a partition queue only while it holds that partition's
  Postgres advisory lock (session-level, on a dedicated connection). Order
  never rests on the lock alone: each partition queue has a single active
  consumer, and checkpoints make any overlap of two writers safe (the second
  commit finds the checkpoint moved, re-plans, and skips what is applied).
- Balance: every replica also holds a member lock. Each rebalance it counts
  the members (pg_locks) and aims at ceil(partitions / members) partitions:
  below that it takes free partitions; above it hands over its highest ones
  (broker consumer cancelled, every received message settled, then the lock
  released), so two replicas converge on an even split within two intervals.
- Failure: if the lock connection dies, this replica stops consuming every
  partition before it tries again, because Postgres has released its locks.
  A killed replica's connection closes the same way, and the survivors pick
  its partitions up at their next rebalance; messages it had not acked are
  redelivered by the broker to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from khala_common.logs import get_logger
from khala_projector import metrics

# pg_advisory_lock(int4, int4) class keys: "khlp" (partition k) and "khlm" (member slot).
PARTITION_LOCK_CLASS = 0x6B686C70
MEMBER_LOCK_CLASS = 0x6B686C6D
MAX_MEMBERS = 1024

_COUNT_MEMBERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = $1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

log = get_logger("projector.partitions")

OnPartition = Callable[[int], Awaitable[None]]


def fair_share(partitions: int, members: int) -> int:
    """How many partitions each of `members` replicas aims to own."""
    return -(-partitions // max(1, members))


def preference(partitions: int, slot: int, share: int) -> list[int]:
    """The order in which a member slot tries free partitions (spreads first picks)."""
    start = (slot * share) % partitions
    return [(start + i) % partitions for i in range(partitions)]


class PartitionOwner:
    """Takes and hands over partitions as replicas come and go."""

    def __init__(
        self,
        dsn: str,
        partitions: int,
        *,
        on_acquire: OnPartition,
        on_release: OnPartition,
        interval_s: float,
    ) -> None:
        self._dsn = dsn
        self._partitions = partitions
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._interval_s = interval_s
        self.owned: set[int] = set()
        self.members = 0
        self.settled_once = asyncio.Event()  # set after the first rebalance

    async def run(self) -> None:
        """Hold a membership and rebalance until cancelled (reconnecting on failure)."""
        backoff = 0.2
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("partition ownership lost; retrying", error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _session(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "khala-projector-partitions"}
        )
        try:
            slot = await self._take_member_slot(conn)
            log.info("projector member", slot=slot)
            while True:
                if conn.is_closed():
                    raise ConnectionError("partition lock connection lost")
                await self.rebalance(conn, slot)
                self.settled_once.set()
                await asyncio.sleep(self._interval_s)
        finally:
            await self._release_all(conn)

    async def _take_member_slot(self, conn: asyncpg.Connection) -> int:
        for slot in range(MAX_MEMBERS):
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", MEMBER_LOCK_CLASS, slot):
                return slot
        raise RuntimeError(f"more than {MAX_MEMBERS} projector replicas")

    async def rebalance(self, conn: asyncpg.Connection, slot: int) -> None:
        """One step towards this replica's fair share of the partitions."""
        self.members = int(await conn.fetchval(_COUNT_MEMBERS, MEMBER_LOCK_CLASS))
        share = fair_share(self._partitions, self.members)
        if len(self.owned) > share:
            for partition in sorted(self.owned, reverse=True)[: len(self.owned) - share]:
                await self._hand_over(conn, partition)
        elif len(self.owned) < share:
            for partition in preference(self._partitions, slot, share):
                if len(self.owned) >= share:
                    break
                if partition not in self.owned:
                    await self._try_take(conn, partition)
        metrics.PARTITIONS_OWNED.set(len(self.owned))

    async def _try_take(self, conn: asyncpg.Connection, partition: int) -> None:
        if not await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", PARTITION_LOCK_CLASS, partition
        ):
            return
        self.owned.add(partition)
        try:
            await self._on_acquire(partition)
        except BaseException:
            self.owned.discard(partition)
            with contextlib.suppress(Exception):
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, $2)", PARTITION_LOCK_CLASS, partition
                )
            raise
        log.info("partition taken", partition=partition, owned=sorted(self.owned))

    async def _hand_over(self, conn: asyncpg.Connection, partition: int) -> None:
        await self._on_release(partition)  # stop consuming first, then let go
        self.owned.discard(partition)
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", PARTITION_LOCK_CLASS, partition)
        log.info("partition handed over", partition=partition, owned=sorted(self.owned))

    async def _release_all(self, conn: asyncpg.Connection) -> None:
        """Stop consuming every owned partition, then close (releasing every lock)."""
        for partition in sorted(self.owned):
            with contextlib.suppress(Exception):
                await self._on_release(partition)
        self.owned.clear()
        metrics.PARTITIONS_OWNED.set(0)
        try:
            await asyncio.wait_for(conn.close(), 2.0)
        except BaseException:
            conn.terminate()
