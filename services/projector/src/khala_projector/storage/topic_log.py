"""Reading committed frames for (re)publication, and the publish cursor.

`publish_cursor.last_frame_id` only moves forward and only after the broker
confirmed every frame up to it, so frames above it are exactly the ones that
may not have reached the fanout. With a single writer, frame_id order is
commit order.
"""

from __future__ import annotations

import asyncpg

from khala_projector.storage.projection_store import StoredFrame

_FRAMES_AFTER = """
SELECT frame_id, topic, epoch, seq, frame_bytes FROM frames
WHERE frame_id > $1 ORDER BY frame_id LIMIT $2
"""
_READ_CURSOR = "SELECT last_frame_id FROM publish_cursor WHERE id = 1"
_ADVANCE_CURSOR = """
UPDATE publish_cursor SET last_frame_id = $1 WHERE id = 1 AND last_frame_id < $1
"""


class TopicLog:
    """The frames table seen by the fanout publisher."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def frames_after(self, frame_id: int, limit: int) -> list[StoredFrame]:
        """Up to `limit` frames with frame_id > `frame_id`, in frame_id order."""
        rows = await self._pool.fetch(_FRAMES_AFTER, frame_id, limit)
        return [
            StoredFrame(r["frame_id"], r["topic"], r["epoch"], r["seq"], r["frame_bytes"])
            for r in rows
        ]

    async def cursor(self) -> int:
        """The highest frame_id known to be published."""
        value = await self._pool.fetchval(_READ_CURSOR)
        return int(value or 0)

    async def advance_cursor(self, frame_id: int) -> None:
        """Move the publish cursor forward to `frame_id` (never backward)."""
        await self._pool.execute(_ADVANCE_CURSOR, frame_id)
