"""Retention and compaction of topic logs (rules in domain/retention.py).

Guarantees:
- Per topic, one transaction holds the `topics` row lock (the same lock the
  writers take), deletes the lowest frames first and moves `oldest_seq` to one
  past the highest seq it deleted. So at every commit, every frame with
  oldest_seq <= seq <= head_seq of the current epoch exists: a replay from
  oldest_seq - 1 is contiguous to the head.
- Doc topics only lose frames superseded by a later frame of the same key, so
  the latest frame of every key survives and a snapshot still has every key.
- Only the current epoch is compacted; a rebuild's staged epoch is never
  touched, and replaced epochs are deleted separately once switched.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from khala_projector.domain.retention import (
    RetentionPolicy,
    TopicRange,
    age_cutoff_ms,
    doc_compaction_ceiling,
    event_delete_upto,
    oldest_after_delete,
)
from khala_projector.storage.frame_writer import is_doc_topic

_TOPICS_PAGE = """
SELECT t.topic, t.head_seq, t.oldest_seq, t.is_doc,
       coalesce(f.published_at_ms, 0) AS oldest_at_ms
FROM topics AS t
LEFT JOIN frames AS f ON f.topic = t.topic AND f.epoch = t.epoch AND f.seq = t.oldest_seq
WHERE t.topic > $1 AND starts_with(t.topic, $3) ORDER BY t.topic LIMIT $2
"""


_READ_TOPIC = "SELECT epoch, head_seq, oldest_seq, is_doc FROM topics WHERE topic = $1"
_LOCK_TOPIC = _READ_TOPIC + " FOR UPDATE"

_AGED_UPTO = """
SELECT coalesce(max(seq), 0) FROM frames
WHERE topic = $1 AND epoch = $2 AND seq >= $3 AND published_at_ms < $4
"""

_DELETE_PREFIX = """
DELETE FROM frames WHERE topic = $1 AND epoch = $2 AND seq >= $3 AND seq <= $4
"""

# Superseded frames (a later frame of the same key exists), lowest seq first.
_SUPERSEDED = """
SELECT f.seq FROM frames AS f
WHERE f.topic = $1 AND f.epoch = $2 AND f.seq <= $3
  AND EXISTS (
      SELECT 1 FROM frames AS g
      WHERE g.topic = f.topic AND g.epoch = f.epoch AND g.key = f.key AND g.seq > f.seq
  )
ORDER BY f.seq LIMIT $4
"""

_DELETE_SEQS = "DELETE FROM frames WHERE topic = $1 AND epoch = $2 AND seq = ANY($3::bigint[])"

_SET_OLDEST = "UPDATE topics SET oldest_seq = $2 WHERE topic = $1"


@dataclass(frozen=True)
class TopicPage:
    """One page of topics with their current range."""

    ranges: list[tuple[str, TopicRange]]

    @property
    def last_topic(self) -> str:
        """The cursor for the next page."""
        return self.ranges[-1][0] if self.ranges else ""


class RetentionStore:
    """SQL of the retention pass."""

    def __init__(self, pool: asyncpg.Pool, batch: int = 5_000) -> None:
        self._pool = pool
        self._batch = batch

    async def topics_after(self, after_topic: str, limit: int, prefix: str = "") -> TopicPage:
        """Up to `limit` topics after `after_topic` starting with `prefix`, in topic order."""
        rows = await self._pool.fetch(_TOPICS_PAGE, after_topic, limit, prefix)
        return TopicPage(
            [
                (
                    r["topic"],
                    TopicRange(r["head_seq"], r["oldest_seq"], r["is_doc"], r["oldest_at_ms"]),
                )
                for r in rows
            ]
        )

    async def compact(self, topic: str, policy: RetentionPolicy, now_ms: int) -> int:
        """Apply retention to one topic, a batch per transaction; returns frames deleted."""
        total = 0
        while True:
            deleted = await self._compact_batch(topic, policy, now_ms)
            total += deleted
            if deleted < self._batch:
                return total

    async def _compact_batch(self, topic: str, policy: RetentionPolicy, now_ms: int) -> int:
        candidates = (
            await self._superseded_candidates(topic, policy) if is_doc_topic(topic) else None
        )
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_TOPIC, topic)
            if row is None or row["head_seq"] == 0:
                return 0
            current = TopicRange(row["head_seq"], row["oldest_seq"], row["is_doc"])
            if current.is_doc:
                return await self._compact_doc(conn, topic, row["epoch"], current, candidates)
            return await self._trim_events(conn, topic, row["epoch"], current, policy, now_ms)

    async def _trim_events(
        self,
        conn: asyncpg.Connection,
        topic: str,
        epoch: str,
        current: TopicRange,
        policy: RetentionPolicy,
        now_ms: int,
    ) -> int:
        cutoff = age_cutoff_ms(policy, now_ms)
        aged = 0
        if cutoff > 0:
            aged = await conn.fetchval(_AGED_UPTO, topic, epoch, current.oldest_seq, cutoff)
        upto = event_delete_upto(current, policy, aged)
        if upto == 0:
            return 0
        upto = min(upto, current.oldest_seq + self._batch - 1)
        status = await conn.execute(_DELETE_PREFIX, topic, epoch, current.oldest_seq, upto)
        await conn.execute(_SET_OLDEST, topic, oldest_after_delete(current.oldest_seq, upto))
        return _count(status)

    async def _superseded_candidates(
        self, topic: str, policy: RetentionPolicy
    ) -> tuple[str, list[int]] | None:
        """A doc topic's superseded seqs (epoch, seqs), read without any lock.

        The search scans the topic's frames and can take seconds on a busy doc
        topic; holding the topic row meanwhile would stall every projection
        commit of the org. A superseded frame stays superseded (frames are only
        appended, and compaction never deletes the latest frame of a key), so
        the seqs found here may be deleted later under the lock as long as the
        epoch is still the same.
        """
        row = await self._pool.fetchrow(_READ_TOPIC, topic)
        if row is None or not row["is_doc"] or row["head_seq"] == 0:
            return None
        current = TopicRange(row["head_seq"], row["oldest_seq"], row["is_doc"])
        ceiling = doc_compaction_ceiling(current, policy)
        if ceiling == 0:
            return None
        rows = await self._pool.fetch(_SUPERSEDED, topic, row["epoch"], ceiling, self._batch)
        return row["epoch"], [r["seq"] for r in rows]

    async def _compact_doc(
        self,
        conn: asyncpg.Connection,
        topic: str,
        epoch: str,
        current: TopicRange,
        candidates: tuple[str, list[int]] | None,
    ) -> int:
        if candidates is None or candidates[0] != epoch or not candidates[1]:
            return 0
        seqs = candidates[1]
        await conn.execute(_DELETE_SEQS, topic, epoch, seqs)
        await conn.execute(_SET_OLDEST, topic, oldest_after_delete(current.oldest_seq, max(seqs)))
        return len(seqs)


def _count(status: str) -> int:
    """Rows affected, from an asyncpg command status such as 'DELETE 12'."""
    return int(status.rsplit(" ", 1)[-1])
