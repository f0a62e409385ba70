"""Read-only SQL over the projector's topic logs (schema `khala`, see the projector's
storage/migrations/0001_topic_logs.sql). Postgres is the ordering oracle: every
frame the gateway sends either came from these tables or carries the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg

from khala_gateway.domain.cursor import Stale, StartPlan, TopicHead

DOC_DELETE = 3  # openagents.sync.v1.FrameKind.FRAME_KIND_DOC_DELETE

_HEAD_SQL = "SELECT epoch, head_seq, oldest_seq FROM topics WHERE topic = $1"
_HEADS_SQL = "SELECT topic, epoch, head_seq, oldest_seq FROM topics WHERE topic = ANY($1::text[])"
_RANGE_SQL = (
    "SELECT seq, frame_bytes FROM frames"
    " WHERE topic = $1 AND epoch = $2 AND seq > $3 AND seq <= $4 ORDER BY seq LIMIT $5"
)
# The latest frame per key as of a seq, skipping deleted keys, in seq order.
_SNAPSHOT_SEQS_SQL = (
    "SELECT seq FROM ("
    " SELECT DISTINCT ON (key) seq, kind FROM frames"
    " WHERE topic = $1 AND epoch = $2 AND seq <= $3 ORDER BY key, seq DESC"
    ") latest WHERE kind <> $4 ORDER BY seq"
)
_BY_SEQS_SQL = (
    "SELECT seq, frame_bytes FROM frames"
    " WHERE topic = $1 AND epoch = $2 AND seq = ANY($3::bigint[]) ORDER BY seq"
)


def _head(row: asyncpg.Record | None) -> TopicHead:
    if row is None:
        return TopicHead()
    return TopicHead(epoch=row["epoch"], head_seq=row["head_seq"], oldest_seq=row["oldest_seq"])


class TopicLog:
    """Queries the gateway runs against the read-only `khala` pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def head(self, topic: str) -> TopicHead:
        """The topic's epoch and seq range (a topic without a row is empty, epoch "1")."""
        async with self._pool.acquire() as conn:
            return _head(await conn.fetchrow(_HEAD_SQL, topic))

    async def read_start(
        self, topic: str, plan: Callable[[TopicHead], StartPlan | Stale]
    ) -> tuple[TopicHead, StartPlan | Stale, list[int]]:
        """The head, the plan `plan` makes from it, and (in the same database
        snapshot) the seqs of the latest live doc per key when the plan is a snapshot."""
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                head = _head(await conn.fetchrow(_HEAD_SQL, topic))
                decision = plan(head)
                if not isinstance(decision, StartPlan) or not decision.snapshot:
                    return head, decision, []
                if head.head_seq == 0:
                    return head, decision, []
                rows = await conn.fetch(
                    _SNAPSHOT_SEQS_SQL, topic, head.epoch, head.head_seq, DOC_DELETE
                )
        return head, decision, [row["seq"] for row in rows]

    async def heads(self, topics: Sequence[str]) -> dict[str, TopicHead]:
        """Heads of many topics in one query (topics without a row are absent)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_HEADS_SQL, list(topics))
        return {row["topic"]: _head(row) for row in rows}

    async def frames_after(
        self, topic: str, epoch: str, after_seq: int, upto_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Frames with after_seq < seq <= upto_seq, in seq order, at most `limit`."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_RANGE_SQL, topic, epoch, after_seq, upto_seq, limit)
        return [(row["seq"], row["frame_bytes"]) for row in rows]

    async def frames_by_seq(
        self, topic: str, epoch: str, seqs: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        """The frames with the given seqs that still exist, in seq order."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_BY_SEQS_SQL, topic, epoch, list(seqs))
        return [(row["seq"], row["frame_bytes"]) for row in rows]
