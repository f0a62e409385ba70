"""Appending frames to topic logs: per-topic seqs, the writer lock, the publish cursor.

Guarantees:
- Gapless per-topic seqs: a transaction takes seqs head_seq+1.. of a topic only
  while it holds that topic's row lock (or, for a rebuild's staged epoch, the
  rebuild_topics row), and a rolled-back transaction takes none.
- frame_id order is commit order, even with several writers (the consumer, the
  drift repair, a rebuild process): every transaction that inserts frames first
  takes the transaction-scoped advisory *writer lock*, so frame ids are
  allocated and committed one transaction at a time. The publisher relies on
  this: every frame below a committed frame_id is committed too.
- Lock order, everywhere: `topics` rows (sorted by topic), then `checkpoints`
  rows, then the writer lock last. Writers that follow it cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from khala_common.topics import parse_topic
from khala_projector.domain.frames import StoredFrame
from khala_projector.domain.projection import FrameDraft
from openagents.sync.v1.frames_pb2 import KhalaFrame

INITIAL_EPOCH = "1"
# pg_advisory_xact_lock key of the frames writer lock ("khalafw" in ASCII).
WRITER_LOCK_KEY = 0x6B68616C616677


@dataclass(frozen=True)
class FrameRow:
    """A numbered frame ready to insert."""

    topic: str
    epoch: str
    seq: int
    kind: int
    key: str
    frame_bytes: bytes


_ENSURE_TOPICS = """
INSERT INTO topics (topic, epoch, is_doc)
SELECT topic, $3, is_doc FROM unnest($1::text[], $2::boolean[]) AS t(topic, is_doc)
ON CONFLICT (topic) DO NOTHING
"""

_LOCK_TOPICS = """
SELECT topic, epoch, head_seq, oldest_seq FROM topics
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

# The writer lock, the frames and the topics' new heads in one statement. The
# lock is taken before the first frame_id is drawn: every inserted row joins the
# lock's one-row CTE, so no row reaches the INSERT before that CTE has run.
_APPEND_FRAMES = """
WITH l AS (SELECT pg_advisory_xact_lock($8)),
ins AS (
    INSERT INTO frames (topic, epoch, seq, kind, key, frame_bytes, published_at_ms)
    SELECT f.topic, f.epoch, f.seq, f.kind, f.key, f.frame_bytes, $7
    FROM l, unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::text[],
                   $6::bytea[]) WITH ORDINALITY AS f(topic, epoch, seq, kind, key, frame_bytes, ord)
    ORDER BY f.ord
    RETURNING frame_id, topic, seq
),
h AS (
    UPDATE topics AS t
    SET head_seq = h.head_seq,
        oldest_seq = CASE WHEN t.oldest_seq = 0 THEN 1 ELSE t.oldest_seq END
    FROM unnest($9::text[], $10::bigint[]) AS h(topic, head_seq)
    WHERE t.topic = h.topic
)
SELECT frame_id, topic, seq FROM ins
"""

# Frames nobody has to publish (a rebuild's staged epoch) may be passed over by
# the publish cursor, but only when no publishable frame (one of its topic's
# current epoch) waits below them: under the writer lock every lower frame_id is
# committed, so this never skips another writer's frame.
_SKIP_CURSOR = """
UPDATE publish_cursor AS pc SET last_frame_id = $2
WHERE pc.id = 1 AND pc.last_frame_id < $2
  AND NOT EXISTS (
      SELECT 1 FROM frames AS f JOIN topics AS t ON t.topic = f.topic AND t.epoch = f.epoch
      WHERE f.frame_id > pc.last_frame_id AND f.frame_id < $1
  )
"""


def is_doc_topic(name: str) -> bool:
    """Whether `name` is a doc topic (`org.<org>.runs|workers`)."""
    parsed = parse_topic(name)
    return parsed is not None and parsed.topic_class.is_doc


async def take_writer_lock(conn: asyncpg.Connection) -> None:
    """Serialize frame-inserting transactions (released at commit or rollback)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK_KEY)


async def lock_topics(
    conn: asyncpg.Connection, names: Sequence[str], *, ensure: bool = True
) -> dict[str, asyncpg.Record]:
    """Create missing topic rows (epoch "1") unless the caller knows they exist
    (`ensure=False`; topic rows are never deleted), and lock all of them in
    topic order."""
    ordered = sorted(set(names))
    if ensure:
        await conn.execute(
            _ENSURE_TOPICS, ordered, [is_doc_topic(name) for name in ordered], INITIAL_EPOCH
        )
    rows = await conn.fetch(_LOCK_TOPICS, ordered)
    return {row["topic"]: row for row in rows}


def number_frames(
    drafts: Sequence[FrameDraft], heads: dict[str, tuple[str, int]], now_ms: int
) -> list[FrameRow]:
    """Give each draft its topic's next seq (heads: topic -> (epoch, head_seq)) and
    serialize the KhalaFrame once."""
    next_seq = {topic: head + 1 for topic, (_, head) in heads.items()}
    rows: list[FrameRow] = []
    for draft in drafts:
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
        rows.append(FrameRow(draft.topic, epoch, seq, int(draft.kind), draft.key, data))
    return rows


def new_heads(rows: Sequence[FrameRow]) -> dict[str, int]:
    """The highest seq per topic among `rows`."""
    heads: dict[str, int] = {}
    for row in rows:
        heads[row.topic] = max(heads.get(row.topic, 0), row.seq)
    return heads


async def insert_frames(
    conn: asyncpg.Connection, rows: Sequence[FrameRow], now_ms: int
) -> list[StoredFrame]:
    """Insert numbered frames (the caller holds the writer lock); frame_id order."""
    if not rows:
        return []
    inserted = await conn.fetch(_INSERT_FRAMES, *_frame_args(rows, now_ms))
    return _stored(rows, inserted)


def _frame_args(rows: Sequence[FrameRow], now_ms: int) -> tuple[object, ...]:
    """$1..$7 of the frame inserts: the rows' columns as arrays, and the commit clock."""
    return (
        [r.topic for r in rows],
        [r.epoch for r in rows],
        [r.seq for r in rows],
        [r.kind for r in rows],
        [r.key for r in rows],
        [r.frame_bytes for r in rows],
        now_ms,
    )


def _stored(rows: Sequence[FrameRow], inserted: Sequence[asyncpg.Record]) -> list[StoredFrame]:
    """The inserted rows as StoredFrames, in frame_id order."""
    ids = {(rec["topic"], rec["seq"]): rec["frame_id"] for rec in inserted}
    stored = [
        StoredFrame(ids[(r.topic, r.seq)], r.topic, r.epoch, r.seq, r.frame_bytes) for r in rows
    ]
    return sorted(stored, key=lambda frame: frame.frame_id)


async def append_frames(
    conn: asyncpg.Connection, rows: Sequence[FrameRow], now_ms: int
) -> list[StoredFrame]:
    """Take the writer lock, insert numbered frames and move their topics' heads
    (the topics are locked by the caller), in ONE statement; frame_id order."""
    if not rows:
        return []
    heads = new_heads(rows)
    inserted = await conn.fetch(
        _APPEND_FRAMES,
        *_frame_args(rows, now_ms),
        WRITER_LOCK_KEY,
        list(heads),
        list(heads.values()),
    )
    return _stored(rows, inserted)


async def move_heads(conn: asyncpg.Connection, heads: dict[str, int]) -> None:
    """Set head_seq of locked topics (oldest_seq becomes 1 on a topic's first frame)."""
    await conn.execute(_MOVE_HEADS, list(heads), list(heads.values()))


async def skip_cursor_past(conn: asyncpg.Connection, frames: Sequence[StoredFrame]) -> None:
    """Let the publish cursor pass `frames` (which need no fanout) if nothing below waits."""
    if frames:
        first = min(f.frame_id for f in frames)
        last = max(f.frame_id for f in frames)
        await conn.execute(_SKIP_CURSOR, first, last)
