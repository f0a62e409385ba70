"""Periodic sampling of gauges that no event updates: queue depths (projection
lag in waiting messages over every partition, DLQ depth) and rebuild progress recorded in Postgres."""

from __future__ import annotations

import asyncio

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_common.topology import partition_queue
from khala_projector import metrics
from khala_projector.storage.rebuild_store import RebuildStore

log = get_logger("projector.sampler")


class MetricsSampler:
    """Reads queue depths with passive declares and rebuild rows with one query."""

    def __init__(self, broker: Broker, rebuilds: RebuildStore, partitions: int = 1) -> None:
        self._broker = broker
        self._partitions = partitions
        self._rebuilds = rebuilds

    async def sample_once(self) -> None:
        """Refresh every sampled gauge."""
        topology = self._broker.topology
        main = 0
        for partition in range(self._partitions):
            main += await self._depth(partition_queue(topology, partition))
        dlq = await self._depth(topology.projector_dlq)
        metrics.PROJECTION_LAG_EVENTS.set(main)
        metrics.DLQ_DEPTH.set(dlq)
        for row in await self._rebuilds.summary():
            projection = row["projection"]
            metrics.REBUILD_ACTIVE.labels(projection).set(1 if row["active"] else 0)
            metrics.REBUILD_PROGRESS.labels(projection).set(float(row["progress"] or 0))
            if row["last_duration_s"] is not None:
                metrics.REBUILD_SECONDS.labels(projection).set(row["last_duration_s"])

    async def run_forever(self, interval_s: float) -> None:
        """Sample now and then every `interval_s` (run as an owned task)."""
        while True:
            try:
                await self.sample_once()
            except Exception as exc:
                log.warning("metrics sampling failed", error=repr(exc))
            await asyncio.sleep(interval_s)

    async def _depth(self, queue: str) -> int:
        # The robust channel hands back its cached queue object (declared at start
        # with the same arguments); declaring it again reads the current depth.
        declared = await self._broker.channel.declare_queue(queue, passive=True, robust=False)
        result = await declared.declare()
        return int(result.message_count or 0)
