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

from khala_common.logs import get_logger
from khala_projector import metrics
from khala_projector.domain.partitions import fair_share, preference
from khala_projector.storage.partition_locks import PartitionLocks

log = get_logger("projector.partitions")

OnPartition = Callable[[int], Awaitable[None]]


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
        locks = await PartitionLocks.connect(self._dsn)
        try:
            slot = await locks.take_member_slot()
            log.info("projector member", slot=slot)
            while True:
                if locks.is_closed():
                    raise ConnectionError("partition lock connection lost")
                await self.rebalance(locks, slot)
                self.settled_once.set()
                await asyncio.sleep(self._interval_s)
        finally:
            await self._release_all(locks)

    async def rebalance(self, locks: PartitionLocks, slot: int) -> None:
        """One step towards this replica's fair share of the partitions."""
        self.members = await locks.count_members()
        share = fair_share(self._partitions, self.members)
        if len(self.owned) > share:
            for partition in sorted(self.owned, reverse=True)[: len(self.owned) - share]:
                await self._hand_over(locks, partition)
        elif len(self.owned) < share:
            for partition in preference(self._partitions, slot, share):
                if len(self.owned) >= share:
                    break
                if partition not in self.owned:
                    await self._try_take(locks, partition)
        metrics.PARTITIONS_OWNED.set(len(self.owned))

    async def _try_take(self, locks: PartitionLocks, partition: int) -> None:
        if not await locks.try_lock(partition):
            return
        self.owned.add(partition)
        try:
            await self._on_acquire(partition)
        except BaseException:
            self.owned.discard(partition)
            with contextlib.suppress(Exception):
                await locks.unlock(partition)
            raise
        log.info("partition taken", partition=partition, owned=sorted(self.owned))

    async def _hand_over(self, locks: PartitionLocks, partition: int) -> None:
        await self._on_release(partition)  # stop consuming first, then let go
        self.owned.discard(partition)
        await locks.unlock(partition)
        log.info("partition handed over", partition=partition, owned=sorted(self.owned))

    async def _release_all(self, locks: PartitionLocks) -> None:
        """Stop consuming every owned partition, then close (releasing every lock)."""
        for partition in sorted(self.owned):
            with contextlib.suppress(Exception):
                await self._on_release(partition)
        self.owned.clear()
        metrics.PARTITIONS_OWNED.set(0)
        await locks.close()
