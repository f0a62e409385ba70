"""The periodic retention pass: per-topic compaction (storage/retention_store.py
states the guarantees) and deletion of epochs replaced by a rebuild."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from khala_common.logs import get_logger
from khala_projector import metrics
from khala_projector.domain.retention import RetentionPolicy, needs_pass
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.storage.retention_store import RetentionStore

PAGE_TOPICS = 500

log = get_logger("projector.retention")


@dataclass
class RetentionReport:
    """Frames deleted by one pass."""

    topics_compacted: int = 0
    event_frames: int = 0
    doc_frames: int = 0
    old_epoch_frames: int = 0


class RetentionWorker:
    """Walks every topic and applies the policy of its class."""

    def __init__(
        self,
        store: RetentionStore,
        rebuilds: RebuildStore,
        policy: RetentionPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._rebuilds = rebuilds
        self._policy = policy
        self._clock = clock

    async def run_pass(self, topic_prefix: str = "") -> RetentionReport:
        """One pass over all topics (or those starting with `topic_prefix`), then the
        cleanup of replaced epochs."""
        report = RetentionReport()
        with metrics.RETENTION_SECONDS.time():
            now_ms = int(self._clock() * 1000)
            after = ""
            while True:
                page = await self._store.topics_after(after, PAGE_TOPICS, topic_prefix)
                for topic, current in page.ranges:
                    if not needs_pass(current, self._policy, now_ms):
                        continue
                    deleted = await self._store.compact(topic, self._policy, now_ms)
                    if deleted:
                        report.topics_compacted += 1
                        if current.is_doc:
                            report.doc_frames += deleted
                        else:
                            report.event_frames += deleted
                if len(page.ranges) < PAGE_TOPICS:
                    break
                after = page.last_topic
            report.old_epoch_frames = await self._rebuilds.clean_old_epochs()
        metrics.FRAMES_COMPACTED.labels("event").inc(report.event_frames)
        metrics.FRAMES_COMPACTED.labels("doc").inc(report.doc_frames)
        metrics.FRAMES_COMPACTED.labels("old_epoch").inc(report.old_epoch_frames)
        return report

    async def run_forever(self, interval_s: float) -> None:
        """A pass every `interval_s` (run as an owned task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await self.run_pass()
            except Exception as exc:
                log.warning("retention pass failed", error=repr(exc))
                continue
            if report.topics_compacted or report.old_epoch_frames:
                log.info("retention pass", **report.__dict__)
