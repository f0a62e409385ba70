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

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from khala_projector.domain.events import StreamRef
from khala_projector.domain.frames import StoredFrame
from khala_projector.domain.projection import PROJECTION_VERSION, Folded, projection_of
from khala_projector.storage.frame_writer import (
    INITIAL_EPOCH,
    append_frames,
    lock_topics,
    number_frames,
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


# One row per requested stream, in request order: its checkpoint and document.
_LOAD_STATES = """
SELECT s.stream_id, c.last_seq, c.doc_hash, d.doc
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS s(stream_id, projection, key, ord)
LEFT JOIN checkpoints AS c ON c.stream_id = s.stream_id
LEFT JOIN documents AS d ON d.projection = s.projection AND d.key = s.key
ORDER BY s.ord
"""

# Moves each existing checkpoint that still is the (last_seq, doc_hash) its
# batch was planned against, and upserts every batch's document in the same
# statement (if any checkpoint did not move, the caller rolls it all back).
_ADVANCE_CHECKPOINTS = """
WITH d AS (
    INSERT INTO documents (projection, key, org_id, doc, doc_hash, last_seq)
    SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::bytea[], $3::text[],
                         $2::bigint[])
    ON CONFLICT (projection, key) DO UPDATE
    SET org_id = EXCLUDED.org_id, doc = EXCLUDED.doc, doc_hash = EXCLUDED.doc_hash,
        last_seq = EXCLUDED.last_seq
)
UPDATE checkpoints AS c
SET last_seq = n.last_seq, doc_hash = n.doc_hash, projection_version = $7,
    last_event_at_ms = n.last_event_at_ms, updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])
     AS n(stream_id, last_seq, doc_hash, last_event_at_ms, expected_hash, expected_seq)
WHERE c.stream_id = n.stream_id AND c.last_seq = n.expected_seq
  AND c.doc_hash = n.expected_hash
RETURNING c.stream_id
"""

# First checkpoints of streams planned against "no checkpoint yet"; a row that
# appeared meanwhile is left alone (and so counts as moved).
_INSERT_CHECKPOINTS = """
INSERT INTO checkpoints
    (stream_id, org_id, last_seq, doc_hash, projection_version, last_event_at_ms, updated_at)
SELECT stream_id, org_id, last_seq, doc_hash, $6, last_event_at_ms, now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
     AS n(stream_id, org_id, last_seq, doc_hash, last_event_at_ms)
ON CONFLICT (stream_id) DO NOTHING
RETURNING stream_id
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

    def __init__(self, pool: asyncpg.Pool, *, crash_in_commit: int = 0) -> None:
        self._pool = pool
        # Fault injection (tests only, 0 = off): SIGKILL inside the nth commit_many
        # transaction, every write done, COMMIT not sent.
        self._crash_in_commit = crash_in_commit
        self._known_topics: set[str] = set()
        self._commits = 0

    async def load(self, stream: StreamRef) -> StreamState:
        """The stream's checkpoint (seq 0 if none) and current document."""
        return (await self.load_many([stream]))[0]

    async def load_many(self, streams: Sequence[StreamRef]) -> list[StreamState]:
        """The state of each stream (seq 0 if no checkpoint), in the order given."""
        rows = await self._pool.fetch(
            _LOAD_STATES,
            [s.stream_id for s in streams],
            [projection_of(s).value for s in streams],
            [s.subject_id for s in streams],
        )
        return [StreamState(r["last_seq"] or 0, r["doc"], r["doc_hash"] or "") for r in rows]

    async def commit(self, folded: Folded, expected: StreamState, now_ms: int) -> list[StoredFrame]:
        """Write document, frames and checkpoint in one transaction; returns the frames.

        Raises CheckpointMoved (and writes nothing) unless the checkpoint still is
        `expected`.
        """
        return await self.commit_many([(folded, expected)], now_ms)

    async def commit_many(
        self, batches: Sequence[tuple[Folded, StreamState]], now_ms: int
    ) -> list[StoredFrame]:
        """Commit the folds of several distinct streams in one transaction.

        Each fold is applied against the state it was planned from; if any
        stream's checkpoint moved meanwhile, CheckpointMoved is raised and
        nothing at all is written. Frames are numbered in the order given
        (stream by stream); returns them in frame_id order.
        """
        if len({folded.stream.stream_id for folded, _ in batches}) != len(batches):
            raise ValueError("commit_many needs distinct streams")
        folds = [folded for folded, _ in batches]
        drafts = [draft for folded in folds for draft in folded.frames]
        async with self._pool.acquire() as conn, conn.transaction():
            # Topic rows first (sorted): two writers of one stream share its
            # topics, so they serialize here before touching its checkpoint.
            names = {draft.topic for draft in drafts}
            topics = await lock_topics(conn, list(names), ensure=not names <= self._known_topics)
            await _advance_checkpoints(conn, batches)
            heads = {name: (row["epoch"], row["head_seq"]) for name, row in topics.items()}
            rows = number_frames(drafts, heads, now_ms)
            stored = await append_frames(conn, rows, now_ms)
            self._commits += 1
            if self._commits == self._crash_in_commit:
                os.kill(os.getpid(), signal.SIGKILL)
        # Only committed topic rows count as known (topic rows are never deleted).
        self._known_topics.update(names)
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


async def _advance_checkpoints(
    conn: asyncpg.Connection, batches: Sequence[tuple[Folded, StreamState]]
) -> None:
    """Move every batch's checkpoint from its expected state; CheckpointMoved otherwise."""
    folds = [folded for folded, _ in batches]
    moved = await conn.fetch(
        _ADVANCE_CHECKPOINTS,
        [f.stream.stream_id for f in folds],
        [f.last_seq for f in folds],
        [f.doc_hash for f in folds],
        [f.last_event_at_ms for f in folds],
        [expected.doc_hash for _, expected in batches],
        [expected.last_seq for _, expected in batches],
        PROJECTION_VERSION,
        [f.projection.value for f in folds],
        [f.stream.subject_id for f in folds],
        [f.stream.org_id for f in folds],
        [f.doc for f in folds],
    )
    done = {row["stream_id"] for row in moved}
    first = [
        f for f, expected in batches if expected.last_seq == 0 and f.stream.stream_id not in done
    ]
    if first:
        inserted = await conn.fetch(
            _INSERT_CHECKPOINTS,
            [f.stream.stream_id for f in first],
            [f.stream.org_id for f in first],
            [f.last_seq for f in first],
            [f.doc_hash for f in first],
            [f.last_event_at_ms for f in first],
            PROJECTION_VERSION,
        )
        done.update(row["stream_id"] for row in inserted)
    missed = sorted(f.stream.stream_id for f in folds if f.stream.stream_id not in done)
    if missed:
        shown = ", ".join(
            f"{f.stream.stream_id} (expected #{e.last_seq})"
            for f, e in batches
            if f.stream.stream_id in missed[:5]
        )
        raise CheckpointMoved(f"checkpoint is no longer as planned: {shown}")


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
