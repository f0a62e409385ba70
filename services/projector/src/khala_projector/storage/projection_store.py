"""The projection transaction: documents, topic logs and checkpoints move together.

One transaction per batch of contiguous events of one stream updates the
document, appends the frames with per-topic seqs and advances the stream's
checkpoint, so after any crash the three agree. Per-topic seqs are gapless:
the `topics` rows are locked (`FOR UPDATE`, in topic order, first) while seqs
head_seq+1.. are taken and head_seq is moved, and a rolled-back transaction
takes none. The checkpoint update is conditional on the (last_seq, doc_hash)
the batch was planned against, so a second writer (an overlapping failover, a
rebuild switch, a drift repair) makes it roll back rather than fold an event
twice or overwrite a document it did not read. Postgres is the ordering
oracle: `frames` holds the truth and the fanout only carries copies of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from khala_projector.domain.events import StreamRef
from khala_projector.domain.projection import PROJECTION_VERSION, Folded, projection_of
from khala_projector.storage.frame_writer import (
    INITIAL_EPOCH,
    StoredFrame,
    insert_frames,
    lock_topics,
    move_heads,
    new_heads,
    number_frames,
    take_writer_lock,
)

__all__ = ["INITIAL_EPOCH", "CheckpointMoved", "ProjectionStore", "StoredFrame", "StreamState"]


class CheckpointMoved(RuntimeError):
    """The stream's checkpoint changed since the batch was planned; nothing was written."""


@dataclass(frozen=True)
class StreamState:
    """A stream's checkpoint (seq and doc hash) and its current document (None: none)."""

    last_seq: int
    doc: bytes | None
    doc_hash: str = ""


@dataclass(frozen=True)
class CheckpointRow:
    """A checkpoint with its stored document, as the drift detector samples it."""

    stream_id: str
    org_id: str
    last_seq: int
    doc_hash: str
    doc: bytes | None
    stored_doc_hash: str


_LOAD_STATE = """
SELECT c.last_seq, c.doc_hash, d.doc
FROM (SELECT 1) AS one
LEFT JOIN checkpoints AS c ON c.stream_id = $1
LEFT JOIN documents AS d ON d.projection = $2 AND d.key = $3
"""

_ADVANCE_CHECKPOINT = """
INSERT INTO checkpoints
    (stream_id, org_id, last_seq, doc_hash, projection_version, last_event_at_ms, updated_at)
VALUES ($1, $2, $3, $4, $5, $8, now())
ON CONFLICT (stream_id) DO UPDATE
SET last_seq = EXCLUDED.last_seq, doc_hash = EXCLUDED.doc_hash,
    projection_version = EXCLUDED.projection_version,
    last_event_at_ms = EXCLUDED.last_event_at_ms, updated_at = now()
WHERE checkpoints.last_seq = $6 AND checkpoints.doc_hash = $7
RETURNING stream_id
"""

_UPSERT_DOCUMENT = """
INSERT INTO documents (projection, key, org_id, doc, doc_hash, last_seq)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (projection, key) DO UPDATE
SET org_id = EXCLUDED.org_id, doc = EXCLUDED.doc, doc_hash = EXCLUDED.doc_hash,
    last_seq = EXCLUDED.last_seq
"""

_READ_CHECKPOINTS = """
SELECT stream_id, last_seq, last_event_at_ms FROM checkpoints WHERE stream_id = ANY($1::text[])
"""

# Streams in stream_id order after `$1`, with their stored documents.
_CHECKPOINT_ROWS = """
SELECT c.stream_id, c.org_id, c.last_seq, c.doc_hash, d.doc, d.doc_hash AS stored_doc_hash
FROM checkpoints AS c
LEFT JOIN documents AS d
  ON d.projection = CASE WHEN c.stream_id LIKE 'run:%' THEN 'runs' ELSE 'workers' END
 AND d.key = split_part(c.stream_id, ':', 2)
"""
_SAMPLE = _CHECKPOINT_ROWS + "WHERE c.stream_id > $1 ORDER BY c.stream_id LIMIT $2"
_SOME = _CHECKPOINT_ROWS + "WHERE c.stream_id = ANY($1::text[]) ORDER BY c.stream_id"


class ProjectionStore:
    """Reads stream state and commits folded batches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, stream: StreamRef) -> StreamState:
        """The stream's checkpoint (seq 0 if none) and current document."""
        row = await self._pool.fetchrow(
            _LOAD_STATE, stream.stream_id, projection_of(stream).value, stream.subject_id
        )
        assert row is not None
        return StreamState(row["last_seq"] or 0, row["doc"], row["doc_hash"] or "")

    async def commit(self, folded: Folded, expected: StreamState, now_ms: int) -> list[StoredFrame]:
        """Write document, frames and checkpoint in one transaction; returns the frames.

        Raises CheckpointMoved (and writes nothing) unless the checkpoint still is
        `expected`.
        """
        stream = folded.stream
        async with self._pool.acquire() as conn, conn.transaction():
            topics = await lock_topics(conn, [draft.topic for draft in folded.frames])
            moved = await conn.fetchval(
                _ADVANCE_CHECKPOINT,
                stream.stream_id,
                stream.org_id,
                folded.last_seq,
                folded.doc_hash,
                PROJECTION_VERSION,
                expected.last_seq,
                expected.doc_hash,
                folded.last_event_at_ms,
            )
            if moved is None:
                raise CheckpointMoved(
                    f"{stream.stream_id}: checkpoint is no longer #{expected.last_seq}"
                )
            await conn.execute(
                _UPSERT_DOCUMENT,
                folded.projection.value,
                stream.subject_id,
                stream.org_id,
                folded.doc,
                folded.doc_hash,
                folded.last_seq,
            )
            heads = {name: (row["epoch"], row["head_seq"]) for name, row in topics.items()}
            rows = number_frames(folded.frames, heads, now_ms)
            await take_writer_lock(conn)
            stored = await insert_frames(conn, rows, now_ms)
            await move_heads(conn, new_heads(rows))
            return stored

    async def checkpoints(self, stream_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(last_seq, last_event_at_ms) of each known stream among `stream_ids`."""
        rows = await self._pool.fetch(_READ_CHECKPOINTS, list(stream_ids))
        return {row["stream_id"]: (row["last_seq"], row["last_event_at_ms"]) for row in rows}

    async def sample(self, after_stream_id: str, limit: int) -> list[CheckpointRow]:
        """Up to `limit` checkpoints after `after_stream_id` in stream_id order."""
        return _checkpoint_rows(await self._pool.fetch(_SAMPLE, after_stream_id, limit))

    async def checkpoint_rows(self, stream_ids: Sequence[str]) -> list[CheckpointRow]:
        """The checkpoints of `stream_ids` that exist, in stream_id order."""
        return _checkpoint_rows(await self._pool.fetch(_SOME, list(stream_ids)))


def _checkpoint_rows(rows: Sequence[asyncpg.Record]) -> list[CheckpointRow]:
    return [
        CheckpointRow(
            r["stream_id"],
            r["org_id"],
            r["last_seq"],
            r["doc_hash"],
            r["doc"],
            r["stored_doc_hash"] or "",
        )
        for r in rows
    ]
