"""Fanout publication of committed frames to `khala.fanout`.

Guarantees:
- At-least-once: a frame is published only after its transaction committed,
  and `publish_cursor` advances only past frames the broker confirmed. It is
  written at most every CURSOR_WRITE_S (and by the retry loop and on stop), so
  a crash may republish the frames of that last moment: duplicates, which
  gateways drop, never a loss. Frames
  above the cursor (a crash, a broker outage) are republished on start, before
  consumption begins, and by a periodic retry while the publisher is behind.
- Order: frames go out in frame_id (= commit) order on one channel, so each
  topic's frames normally arrive in seq order. Republishing can repeat frames;
  gateways drop seq <= last_sent and fill gaps from Postgres, which stays the
  ordering oracle: the broker is only a doorbell that carries the frame.
- The message format (per-org FanoutBatch messages) is adapters/fanout.py's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_projector import metrics
from khala_projector.adapters.fanout import publish_frames
from khala_projector.domain.frames import StoredFrame
from khala_projector.storage.topic_log import TopicLog

PAGE_SIZE = 500
# Longest the stored publish cursor lags the published frames while busy.
CURSOR_WRITE_S = 0.25

log = get_logger("projector.publisher")


class FanoutPublisher:
    """Publishes committed frames and keeps the publish cursor."""

    def __init__(self, broker: Broker, topic_log: TopicLog, exchange: str) -> None:
        self._broker = broker
        self._log = topic_log
        self._exchange = exchange
        self._lock = asyncio.Lock()
        self._cursor = 0
        self._stored_cursor = 0
        self._cursor_written_at = 0.0
        self._behind = True

    @property
    def behind(self) -> bool:
        """Whether committed frames may be unpublished (a catch-up is pending)."""
        return self._behind

    async def catch_up(self) -> int:
        """Publish every frame above the cursor in frame_id order; returns how many."""
        async with self._lock:
            return await self._catch_up_locked()

    async def publish_committed(self, frames: Sequence[StoredFrame]) -> None:
        """Publish frames just committed; on failure leave them to the cursor retry."""
        async with self._lock:
            try:
                if self._behind:
                    await self._catch_up_locked()
                elif frames:
                    await self._publish(frames)
            except Exception as exc:
                self._mark_behind(exc)

    async def retry_forever(self, interval_s: float) -> None:
        """Retry the catch-up every `interval_s` while behind, and write a cursor that
        moved since it was last written (run as an owned task)."""
        while True:
            await asyncio.sleep(interval_s)
            if not self._behind:
                try:
                    await self.flush_cursor()
                except Exception as exc:
                    log.warning("publish cursor write failed", error=repr(exc))
                continue
            try:
                count = await self.catch_up()
                log.info("fanout caught up", frames=count)
            except Exception as exc:
                self._mark_behind(exc)

    async def _catch_up_locked(self) -> int:
        self._stored_cursor = max(self._stored_cursor, await self._log.cursor())
        self._cursor = max(self._cursor, self._stored_cursor)
        total = 0
        while True:
            page = await self._log.frames_after(self._cursor, PAGE_SIZE)
            if not page:
                break
            await self._publish(page)
            total += len(page)
        self._behind = False
        metrics.PUBLISH_BACKLOG.set(0)
        return total

    async def flush_cursor(self) -> None:
        """Write the publish cursor if it moved since it was last written."""
        cursor = self._cursor
        if cursor > self._stored_cursor:
            await self._log.advance_cursor(cursor)
            self._stored_cursor = max(self._stored_cursor, cursor)
            self._cursor_written_at = time.monotonic()

    async def _publish(self, frames: Sequence[StoredFrame]) -> None:
        await publish_frames(self._broker, self._exchange, frames)
        metrics.FRAMES_PUBLISHED.inc(len(frames))
        self._cursor = max(self._cursor, max(frame.frame_id for frame in frames))
        if time.monotonic() - self._cursor_written_at >= CURSOR_WRITE_S:
            await self.flush_cursor()

    def _mark_behind(self, exc: Exception) -> None:
        self._behind = True
        metrics.PUBLISH_FAILURES.inc()
        metrics.PUBLISH_BACKLOG.set(1)
        log.warning("fanout publish failed; will retry from cursor", error=repr(exc))
