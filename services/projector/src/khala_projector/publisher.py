"""Fanout publication of committed frames to `khala.fanout`.

Guarantees:
- At-least-once: a frame is published only after its transaction committed,
  and `publish_cursor` advances only past frames the broker confirmed. Frames
  above the cursor (a crash, a broker outage) are republished on start, before
  consumption begins, and by a periodic retry while the publisher is behind.
- Order: frames go out in frame_id (= commit) order on one channel, so each
  topic's frames normally arrive in seq order. Republishing can repeat frames;
  gateways drop seq <= last_sent and fill gaps from Postgres, which stays the
  ordering oracle: the broker is only a doorbell that carries the frame.
- Each message (transient): routing key = topic, message_id = `<topic>/<epoch>/<seq>`, body =
  the exact `frames.frame_bytes` (a serialized openagents.sync.v1.KhalaFrame).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_projector import metrics
from khala_projector.storage.frame_writer import StoredFrame
from khala_projector.storage.topic_log import TopicLog
from openagents.sync.v1.frames_pb2 import KhalaFrame

FRAME_TYPE = KhalaFrame.DESCRIPTOR.full_name
PAGE_SIZE = 500

log = get_logger("projector.publisher")


class FanoutPublisher:
    """Publishes committed frames and keeps the publish cursor."""

    def __init__(self, broker: Broker, topic_log: TopicLog, exchange: str) -> None:
        self._broker = broker
        self._log = topic_log
        self._exchange = exchange
        self._lock = asyncio.Lock()
        self._cursor = 0
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
        """Retry the catch-up every `interval_s` while behind (run as an owned task)."""
        while True:
            await asyncio.sleep(interval_s)
            if not self._behind:
                continue
            try:
                count = await self.catch_up()
                log.info("fanout caught up", frames=count)
            except Exception as exc:
                self._mark_behind(exc)

    async def _catch_up_locked(self) -> int:
        self._cursor = max(self._cursor, await self._log.cursor())
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

    async def _publish(self, frames: Sequence[StoredFrame]) -> None:
        # Publishes are issued in order on one channel; awaiting their confirms
        # together keeps one round trip per batch instead of one per frame.
        await asyncio.gather(*(self._publish_one(frame) for frame in frames))
        metrics.FRAMES_PUBLISHED.inc(len(frames))
        last = max(frame.frame_id for frame in frames)
        await self._log.advance_cursor(last)
        self._cursor = max(self._cursor, last)

    async def _publish_one(self, frame: StoredFrame) -> None:
        await self._broker.publish_raw(
            self._exchange,
            frame.topic,
            frame.frame_bytes,
            type_name=FRAME_TYPE,
            message_id=frame.message_id,
            # Doorbells: a lost one is read from Postgres, so the broker need
            # not write them to disk.
            persistent=False,
        )

    def _mark_behind(self, exc: Exception) -> None:
        self._behind = True
        metrics.PUBLISH_FAILURES.inc()
        metrics.PUBLISH_BACKLOG.set(1)
        log.warning("fanout publish failed; will retry from cursor", error=repr(exc))
