"""The projection transaction: documents, topic logs and checkpoints move together.

One transaction per batch of contiguous events of one stream updates the
document, appends the frames with per-topic seqs and advances the stream's
checkpoint, so after any crash the three agree. Per-topic seqs are gapless:
the `topics` row is locked (`FOR UPDATE`) while seqs head_seq+1.. are taken
and head_seq is moved, and a rolled-back transaction takes none. The
checkpoint update is conditional on the last_seq the batch was planned
against, so a second writer (e.g. an overlapping failover) rolls back rather
than folding an event twice. Postgres is the ordering oracle: `frames` holds
the truth and the fanout only carries copies of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from khala_common.topics import parse_topic
from khala_projector.domain.events import StreamRef
from khala_projector.domain.projection import PROJECTION_VERSION, Folded, projection_of
from openagents.sync.v1.frames_pb2 import KhalaFrame

INITIAL_EPOCH = "1"


class CheckpointMoved(RuntimeError):
    """The stream's checkpoint changed since the batch was planned; nothing was written."""


@dataclass(frozen=True)
class StreamState:
    """A stream's checkpoint seq and its current document bytes (None: no document)."""

    last_seq: int
    doc: bytes | None


@dataclass(frozen=True)
class StoredFrame:
    """A committed topic-log row, as published to the fanout."""

    frame_id: int
    topic: str
    epoch: str
    seq: int
    frame_bytes: bytes

    @property
    def message_id(self) -> str:
        """The fanout message id `<topic>/<epoch>/<seq>`."""
        return f"{self.topic}/{self.epoch}/{self.seq}"


_LOAD_STATE = """
SELECT c.last_seq, d.doc
FROM (SELECT 1) AS one
LEFT JOIN checkpoints AS c ON c.stream_id = $1
LEFT JOIN documents AS d ON d.projection = $2 AND d.key = $3
"""

_ADVANCE_CHECKPOINT = """
INSERT INTO checkpoints (stream_id, org_id, last_seq, doc_hash, projection_version, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (stream_id) DO UPDATE
SET last_seq = EXCLUDED.last_seq, doc_hash = EXCLUDED.doc_hash,
    projection_version = EXCLUDED.projection_version, updated_at = now()
WHERE checkpoints.last_seq = $6
RETURNING stream_id
"""

_UPSERT_DOCUMENT = """
INSERT INTO documents (projection, key, org_id, doc, doc_hash, last_seq)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (projection, key) DO UPDATE
SET org_id = EXCLUDED.org_id, doc = EXCLUDED.doc, doc_hash = EXCLUDED.doc_hash,
    last_seq = EXCLUDED.last_seq
"""

_ENSURE_TOPICS = """
INSERT INTO topics (topic, epoch, is_doc)
SELECT topic, $3, is_doc FROM unnest($1::text[], $2::boolean[]) AS t(topic, is_doc)
ON CONFLICT (topic) DO NOTHING
"""

_LOCK_TOPICS = """
SELECT topic, epoch, head_seq FROM topics
WHERE topic = ANY($1::text[]) ORDER BY topic FOR UPDATE
"""

_MOVE_HEADS = """
UPDATE topics AS t
SET head_seq = h.head_seq,
    oldest_seq = CASE WHEN t.oldest_seq = 0 THEN 1 ELSE t.oldest_seq END
FROM unnest($1::text[], $2::bigint[]) AS h(topic, head_seq)
WHERE t.topic = h.topic
"""

_INSERT_FRAMES = """
INSERT INTO frames (topic, epoch, seq, kind, key, frame_bytes, published_at_ms)
SELECT topic, epoch, seq, kind, key, frame_bytes, $7
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::text[], $6::bytea[])
     WITH ORDINALITY AS f(topic, epoch, seq, kind, key, frame_bytes, ord)
ORDER BY ord
RETURNING frame_id, topic, seq
"""

_READ_CHECKPOINTS = "SELECT stream_id, last_seq FROM checkpoints WHERE stream_id = ANY($1::text[])"


class ProjectionStore:
    """Reads stream state and commits folded batches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, stream: StreamRef) -> StreamState:
        """The stream's checkpoint seq (0 if none) and current document."""
        row = await self._pool.fetchrow(
            _LOAD_STATE, stream.stream_id, projection_of(stream).value, stream.subject_id
        )
        assert row is not None
        return StreamState(row["last_seq"] or 0, row["doc"])

    async def commit(
        self, folded: Folded, expected_last_seq: int, now_ms: int
    ) -> list[StoredFrame]:
        """Write document, frames and checkpoint in one transaction; returns the frames."""
        stream = folded.stream
        async with self._pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                _ADVANCE_CHECKPOINT,
                stream.stream_id,
                stream.org_id,
                folded.last_seq,
                folded.doc_hash,
                PROJECTION_VERSION,
                expected_last_seq,
            )
            if moved is None:
                raise CheckpointMoved(
                    f"{stream.stream_id}: checkpoint is no longer {expected_last_seq}"
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
            return await _append_frames(conn, folded, now_ms)

    async def checkpoints(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Checkpoint seq of each known stream among `stream_ids`."""
        rows = await self._pool.fetch(_READ_CHECKPOINTS, list(stream_ids))
        return {row["stream_id"]: row["last_seq"] for row in rows}


async def _lock_topics(conn: asyncpg.Connection, names: list[str]) -> dict[str, tuple[str, int]]:
    """Create missing topic rows and lock all of them; returns (epoch, head_seq) by topic."""
    is_doc = [_is_doc_topic(name) for name in names]
    await conn.execute(_ENSURE_TOPICS, names, is_doc, INITIAL_EPOCH)
    rows = await conn.fetch(_LOCK_TOPICS, names)
    return {row["topic"]: (row["epoch"], row["head_seq"]) for row in rows}


def _is_doc_topic(name: str) -> bool:
    parsed = parse_topic(name)
    return parsed is not None and parsed.topic_class.is_doc


@dataclass(frozen=True)
class _Row:
    topic: str
    epoch: str
    seq: int
    kind: int
    key: str
    frame_bytes: bytes


def _number_frames(folded: Folded, heads: dict[str, tuple[str, int]], now_ms: int) -> list[_Row]:
    """Give each draft its topic's next seq and serialize the KhalaFrame once."""
    next_seq = {topic: head + 1 for topic, (_, head) in heads.items()}
    rows: list[_Row] = []
    for draft in folded.frames:
        epoch, seq = heads[draft.topic][0], next_seq[draft.topic]
        next_seq[draft.topic] = seq + 1
        frame = KhalaFrame(
            topic=draft.topic,
            seq=seq,
            kind=draft.kind,
            key=draft.key,
            payload_bytes=draft.payload,
            schema_version=draft.schema_version,
            epoch=epoch,
            published_at_ms=now_ms,
        )
        data = frame.SerializeToString(deterministic=True)
        rows.append(_Row(draft.topic, epoch, seq, int(draft.kind), draft.key, data))
    return rows


async def _append_frames(
    conn: asyncpg.Connection, folded: Folded, now_ms: int
) -> list[StoredFrame]:
    heads = await _lock_topics(conn, sorted({draft.topic for draft in folded.frames}))
    rows = _number_frames(folded, heads, now_ms)
    inserted = await conn.fetch(
        _INSERT_FRAMES,
        [r.topic for r in rows],
        [r.epoch for r in rows],
        [r.seq for r in rows],
        [r.kind for r in rows],
        [r.key for r in rows],
        [r.frame_bytes for r in rows],
        now_ms,
    )
    new_heads = {r.topic: r.seq for r in rows}
    await conn.execute(_MOVE_HEADS, list(new_heads), list(new_heads.values()))
    ids = {(rec["topic"], rec["seq"]): rec["frame_id"] for rec in inserted}
    stored = [
        StoredFrame(ids[(r.topic, r.seq)], r.topic, r.epoch, r.seq, r.frame_bytes) for r in rows
    ]
    return sorted(stored, key=lambda frame: frame.frame_id)
