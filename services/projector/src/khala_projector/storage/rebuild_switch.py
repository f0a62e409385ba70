"""The SQL of one rebuild's staging chunks and of the per-org epoch switch.

Guarantees:
- A staged chunk (frames of the rebuild's epoch, the stream's staged document
  and its `staged_seq`) commits in one transaction; the progress update is
  conditional on the staged_seq the chunk was folded from.
- The switch of an org locks, in the writers' order, the `topics` rows of the
  org's doc topic and its streams' event topics, then their checkpoints, then
  (when staging catch-up frames) the writer lock. With the doc topic locked no
  stream of the org can commit, so the switch sees a quiescent org; it refuses
  (StreamsChanged) if the org has a stream it was not told about.
- At the switch, documents, checkpoints and `topics` (epoch, head_seq,
  oldest_seq = 1) change together; the replaced epoch is recorded for cleanup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from khala_projector.domain.events import StreamRef
from khala_projector.domain.frames import StoredFrame
from khala_projector.domain.projection import PROJECTION_VERSION, Folded, doc_topic, event_topic
from khala_projector.domain.rebuild import RebuildScope, RebuildStatus
from khala_projector.storage.frame_writer import (
    insert_frames,
    lock_topics,
    new_heads,
    number_frames,
    skip_cursor_past,
    take_writer_lock,
)


class RebuildConflict(RuntimeError):
    """The rebuild's bookkeeping changed under us (another process?); nothing was written."""


class StreamsChanged(RuntimeError):
    """New streams of the org appeared before the switch could lock them."""

    def __init__(self, stream_ids: Sequence[str]) -> None:
        super().__init__(f"{len(stream_ids)} new streams: {', '.join(stream_ids[:5])}")
        self.stream_ids = list(stream_ids)


@dataclass(frozen=True)
class Rebuild:
    """A rebuilds row."""

    rebuild_id: int
    scope: RebuildScope
    epoch: str
    status: RebuildStatus


_ENSURE_REBUILD_TOPICS = """
INSERT INTO rebuild_topics (rebuild_id, topic, org_id)
SELECT $1, topic, $3 FROM unnest($2::text[]) AS t(topic)
ON CONFLICT (rebuild_id, topic) DO NOTHING
"""

_LOCK_REBUILD_TOPICS = """
SELECT topic, head_seq FROM rebuild_topics
WHERE rebuild_id = $1 AND topic = ANY($2::text[]) ORDER BY topic FOR UPDATE
"""

_MOVE_REBUILD_HEADS = """
UPDATE rebuild_topics AS rt SET head_seq = h.head_seq
FROM unnest($2::text[], $3::bigint[]) AS h(topic, head_seq)
WHERE rt.rebuild_id = $1 AND rt.topic = h.topic
"""

_ADVANCE_STAGED = """
UPDATE rebuild_streams SET staged_seq = $4, doc = $5, doc_hash = $6, last_event_at_ms = $7
WHERE rebuild_id = $1 AND stream_id = $2 AND staged_seq = $3
RETURNING stream_id
"""

_LIVE_STREAMS = """
SELECT stream_id FROM checkpoints WHERE org_id = $1 AND stream_id LIKE $2 || '%'
"""

_LOCK_CHECKPOINTS = """
SELECT stream_id, last_seq FROM checkpoints
WHERE stream_id = ANY($1::text[]) ORDER BY stream_id FOR UPDATE
"""

_SWITCH_DOCUMENTS = """
INSERT INTO documents (projection, key, org_id, doc, doc_hash, last_seq)
SELECT $3, split_part(rs.stream_id, ':', 2), rs.org_id, rs.doc, rs.doc_hash, rs.staged_seq
FROM rebuild_streams AS rs
WHERE rs.rebuild_id = $1 AND rs.org_id = $2
ON CONFLICT (projection, key) DO UPDATE
SET org_id = EXCLUDED.org_id, doc = EXCLUDED.doc, doc_hash = EXCLUDED.doc_hash,
    last_seq = EXCLUDED.last_seq
"""

_SWITCH_CHECKPOINTS = """
UPDATE checkpoints AS c
SET last_seq = rs.staged_seq, doc_hash = rs.doc_hash, projection_version = $3,
    last_event_at_ms = rs.last_event_at_ms, updated_at = now()
FROM rebuild_streams AS rs
WHERE rs.rebuild_id = $1 AND rs.org_id = $2 AND c.stream_id = rs.stream_id
"""

_RECORD_OLD_EPOCHS = """
UPDATE rebuild_topics AS rt SET old_epoch = t.epoch, switched_at = now()
FROM topics AS t
WHERE rt.rebuild_id = $1 AND rt.org_id = $2 AND t.topic = rt.topic
"""

_SWITCH_TOPICS = """
UPDATE topics AS t
SET epoch = $3, head_seq = rt.head_seq,
    oldest_seq = CASE WHEN rt.head_seq > 0 THEN 1 ELSE 0 END
FROM rebuild_topics AS rt
WHERE rt.rebuild_id = $1 AND rt.org_id = $2 AND t.topic = rt.topic
"""

_HEAD_FRAMES = """
SELECT f.frame_id, f.topic, f.epoch, f.seq, f.frame_bytes
FROM rebuild_topics AS rt JOIN frames AS f
  ON f.topic = rt.topic AND f.epoch = $3 AND f.seq = rt.head_seq
WHERE rt.rebuild_id = $1 AND rt.org_id = $2
ORDER BY f.frame_id
"""


class OrgSwitch:
    """The open transaction of one org's switch (see RebuildStore.switching)."""

    def __init__(self, conn: asyncpg.Connection, rebuild: Rebuild, org_id: str) -> None:
        self._conn = conn
        self._rebuild = rebuild
        self._org_id = org_id

    async def lock(self, streams: Sequence[StreamRef]) -> dict[str, int]:
        """Lock the org's topics and the streams' checkpoints; returns live checkpoint seqs.

        Raises StreamsChanged when the org has streams of the projection that are
        not in `streams` (the caller stages them and tries again).
        """
        if not streams:
            return {}
        names = [doc_topic(streams[0])] + [event_topic(stream) for stream in streams]
        await lock_topics(self._conn, names)
        # With the doc topic locked, no stream of this org can commit until we do.
        live = await self._conn.fetch(
            _LIVE_STREAMS, self._org_id, self._rebuild.scope.projection.stream_prefix
        )
        known = {stream.stream_id for stream in streams}
        new = sorted(row["stream_id"] for row in live if row["stream_id"] not in known)
        if new:
            raise StreamsChanged(new)
        rows = await self._conn.fetch(_LOCK_CHECKPOINTS, sorted(known))
        return {row["stream_id"]: row["last_seq"] for row in rows}

    async def staged_doc(self, stream_id: str) -> bytes | None:
        """The document staged so far for a stream, read inside the transaction."""
        doc: bytes | None = await self._conn.fetchval(
            "SELECT doc FROM rebuild_streams WHERE rebuild_id = $1 AND stream_id = $2",
            self._rebuild.rebuild_id,
            stream_id,
        )
        return doc

    async def stage(self, folded: Folded, expected_staged_seq: int, now_ms: int) -> None:
        """Stage a catch-up chunk inside the switch transaction."""
        await stage_chunk(self._conn, self._rebuild, folded, expected_staged_seq, now_ms)

    async def finish(self) -> list[StoredFrame]:
        """Switch documents, checkpoints and topics; returns each topic's new head frame."""
        rebuild, org, conn = self._rebuild, self._org_id, self._conn
        missing = await conn.fetchval(
            "SELECT count(*) FROM rebuild_streams"
            " WHERE rebuild_id = $1 AND org_id = $2 AND doc IS NULL",
            rebuild.rebuild_id,
            org,
        )
        if missing:
            raise RebuildConflict(f"org {org}: {missing} streams have no staged document")
        projection = rebuild.scope.projection.value
        await conn.execute(_SWITCH_DOCUMENTS, rebuild.rebuild_id, org, projection)
        await conn.execute(_SWITCH_CHECKPOINTS, rebuild.rebuild_id, org, PROJECTION_VERSION)
        await conn.execute(_RECORD_OLD_EPOCHS, rebuild.rebuild_id, org)
        await conn.execute(_SWITCH_TOPICS, rebuild.rebuild_id, org, rebuild.epoch)
        rows = await conn.fetch(_HEAD_FRAMES, rebuild.rebuild_id, org, rebuild.epoch)
        return [
            StoredFrame(r["frame_id"], r["topic"], r["epoch"], r["seq"], r["frame_bytes"])
            for r in rows
        ]


async def stage_chunk(
    conn: asyncpg.Connection,
    rebuild: Rebuild,
    folded: Folded,
    expected_staged_seq: int,
    now_ms: int,
) -> None:
    """Append `folded`'s frames to the rebuild's epoch and advance the stream's progress."""
    topics = sorted({draft.topic for draft in folded.frames})
    await conn.execute(_ENSURE_REBUILD_TOPICS, rebuild.rebuild_id, topics, folded.stream.org_id)
    locked = await conn.fetch(_LOCK_REBUILD_TOPICS, rebuild.rebuild_id, topics)
    advanced = await conn.fetchval(
        _ADVANCE_STAGED,
        rebuild.rebuild_id,
        folded.stream.stream_id,
        expected_staged_seq,
        folded.last_seq,
        folded.doc,
        folded.doc_hash,
        folded.last_event_at_ms,
    )
    if advanced is None:
        raise RebuildConflict(
            f"{folded.stream.stream_id}: staged progress is no longer #{expected_staged_seq}"
        )
    heads = {row["topic"]: (rebuild.epoch, row["head_seq"]) for row in locked}
    rows = number_frames(folded.frames, heads, now_ms)
    await take_writer_lock(conn)
    stored = await insert_frames(conn, rows, now_ms)
    moved = new_heads(rows)
    await conn.execute(_MOVE_REBUILD_HEADS, rebuild.rebuild_id, list(moved), list(moved.values()))
    # Staged frames are never fanned out (readers bootstrap from Postgres after
    # the switch), so the publish cursor may pass them.
    await skip_cursor_past(conn, stored)
