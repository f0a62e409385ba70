"""Reading committed frames for (re)publication, and the publish cursor.

`publish_cursor.last_frame_id` only moves forward and only after the broker
confirmed every frame up to it (frames that need no fanout, a rebuild's staged
epoch, may be passed over: see frame_writer.skip_cursor_past), so frames above
it are exactly the ones that may not have reached the fanout. frame_id order is commit order: every writer
inserts frames under the writer lock (storage/frame_writer.py).
"""

from __future__ import annotations

import asyncpg

from khala_projector.domain.frames import StoredFrame

# Only frames of their topic's current epoch are published: a rebuild's staged
# epoch is not live yet, and a replaced epoch is gone for every reader.
_FRAMES_AFTER = """
SELECT f.frame_id, f.topic, f.epoch, f.seq, f.frame_bytes
FROM frames AS f JOIN topics AS t ON t.topic = f.topic AND t.epoch = f.epoch
WHERE f.frame_id > $1 ORDER BY f.frame_id LIMIT $2
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
        """Up to `limit` current-epoch frames with frame_id > `frame_id`, in frame_id order."""
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
