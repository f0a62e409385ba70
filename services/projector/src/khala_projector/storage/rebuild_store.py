"""Rebuild bookkeeping: rebuild rows, enrolled streams, staging, cleanup.
The staging chunk and the per-org switch themselves are in rebuild_switch.py.

Guarantees (design in docs/projector.md, "Rebuild"):
- Staged frames are written to `frames` under the rebuild's new epoch, which
  no reader sees before the switch (readers always filter by the topic's
  current epoch). A stream's staged frames, its staged document and its
  progress (`rebuild_streams.staged_seq`) commit in one transaction, so an
  interrupted rebuild resumes exactly where it stopped, without duplicates.
- The switch of an org is one transaction that holds the `topics` rows of the
  org's doc topic and of every event topic of the rebuilt streams, then their
  checkpoints (the writers' lock order): the live consumer waits for it, so
  the new epoch receives the events projected meanwhile (read from runtime
  under the locks) and the consumer continues in the new epoch right after,
  in stream order. Documents and checkpoints take the rebuilt values; their
  doc_hash changes make any batch planned before the switch re-plan.
- Frames of a replaced epoch are deleted only after the switch committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from khala_projector.domain.epochs import new_epoch
from khala_projector.domain.events import StreamRef, stream_ref
from khala_projector.domain.projection import Folded, Projection
from khala_projector.domain.rebuild import UNFINISHED, RebuildScope, RebuildStatus
from khala_projector.storage.rebuild_switch import (
    OrgSwitch,
    Rebuild,
    RebuildConflict,
    StreamsChanged,
    stage_chunk,
)

__all__ = [
    "OrgSwitch",
    "Progress",
    "Rebuild",
    "RebuildConflict",
    "RebuildStore",
    "StagedStream",
    "StreamsChanged",
]

# pg_try_advisory_lock key held by the one process running a rebuild ("khalarb").
REBUILD_LOCK_KEY = 0x6B68616C617262


@dataclass(frozen=True)
class StagedStream:
    """A stream of a rebuild: its staged progress and, for reference, its live checkpoint."""

    stream: StreamRef
    staged_seq: int
    checkpoint_seq: int

    @property
    def behind(self) -> bool:
        """Never staged, or the live projection got ahead of what was staged."""
        return self.staged_seq == 0 or self.staged_seq < self.checkpoint_seq


@dataclass(frozen=True)
class Progress:
    """How far the staging of a rebuild is."""

    streams: int
    staged: int
    orgs_pending: int


def _rebuild(row: asyncpg.Record) -> Rebuild:
    scope = RebuildScope(Projection(row["projection"]), row["org_id"])
    return Rebuild(row["rebuild_id"], scope, row["epoch"], RebuildStatus(row["status"]))


# An org counts as switched once any topic of it was switched by the rebuild.
_ORG_PENDING = """
NOT EXISTS (
    SELECT 1 FROM rebuild_topics AS rt
    WHERE rt.rebuild_id = rs.rebuild_id AND rt.org_id = rs.org_id AND rt.switched_at IS NOT NULL
)
"""

_ENROLL = """
INSERT INTO rebuild_streams (rebuild_id, stream_id, org_id)
SELECT $1, c.stream_id, c.org_id FROM checkpoints AS c
WHERE c.stream_id LIKE $2 || '%' AND ($3 = '' OR c.org_id = $3)
  AND NOT EXISTS (
      SELECT 1 FROM rebuild_topics AS rt
      WHERE rt.rebuild_id = $1 AND rt.org_id = c.org_id AND rt.switched_at IS NOT NULL
  )
ON CONFLICT (rebuild_id, stream_id) DO NOTHING
"""

_STREAMS = f"""
SELECT rs.stream_id, rs.org_id, rs.staged_seq, coalesce(c.last_seq, 0) AS checkpoint_seq
FROM rebuild_streams AS rs LEFT JOIN checkpoints AS c ON c.stream_id = rs.stream_id
WHERE rs.rebuild_id = $1 AND ($2 = '' OR rs.org_id = $2) AND rs.stream_id > $3
  AND (NOT $5 OR rs.staged_seq = 0 OR rs.staged_seq < coalesce(c.last_seq, 0))
  AND {_ORG_PENDING}
ORDER BY rs.stream_id LIMIT $4
"""

_ORGS = f"""
SELECT DISTINCT rs.org_id FROM rebuild_streams AS rs
WHERE rs.rebuild_id = $1 AND {_ORG_PENDING} ORDER BY rs.org_id
"""

_PROGRESS = f"""
SELECT count(*) AS streams,
       count(*) FILTER (WHERE rs.staged_seq >= coalesce(c.last_seq, 0)) AS staged,
       count(DISTINCT rs.org_id) AS orgs
FROM rebuild_streams AS rs LEFT JOIN checkpoints AS c ON c.stream_id = rs.stream_id
WHERE rs.rebuild_id = $1 AND {_ORG_PENDING}
"""

_TO_CLEAN = """
SELECT rebuild_id, topic, old_epoch FROM rebuild_topics
WHERE switched_at IS NOT NULL AND cleaned_at IS NULL AND ($1 = 0 OR rebuild_id = $1)
ORDER BY rebuild_id, topic LIMIT $2
"""

_DELETE_EPOCH_BATCH = """
DELETE FROM frames WHERE (topic, epoch, seq) IN (
    SELECT topic, epoch, seq FROM frames WHERE topic = $1 AND epoch = $2 LIMIT $3
)
"""


class RebuildStore:
    """SQL of `khala-projector rebuild`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[bool]:
        """Hold the rebuild lock (one rebuild process at a time); yields whether it was free."""
        async with self._pool.acquire() as conn:
            taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK_KEY)
            try:
                yield bool(taken)
            finally:
                if taken:
                    await conn.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK_KEY)

    # -- rebuild rows ----------------------------------------------------------

    async def unfinished(self) -> list[Rebuild]:
        """Rebuilds still staging or cleaning up, oldest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM rebuilds WHERE status = ANY($1::text[]) ORDER BY rebuild_id",
            [status.value for status in UNFINISHED],
        )
        return [_rebuild(row) for row in rows]

    async def create(self, scope: RebuildScope) -> Rebuild:
        """A new rebuild in status staging, with its own epoch."""
        async with self._pool.acquire() as conn, conn.transaction():
            rebuild_id = await conn.fetchval(
                "SELECT nextval(pg_get_serial_sequence('rebuilds', 'rebuild_id'))"
            )
            row = await conn.fetchrow(
                "INSERT INTO rebuilds (rebuild_id, projection, org_id, epoch)"
                " VALUES ($1, $2, $3, $4) RETURNING *",
                rebuild_id,
                scope.projection.value,
                scope.org_id,
                new_epoch(),
            )
        return _rebuild(row)

    async def set_status(self, rebuild: Rebuild, status: RebuildStatus) -> None:
        """Move a rebuild to `status` (done and abandoned also stamp finished_at)."""
        finished = status in (RebuildStatus.DONE, RebuildStatus.ABANDONED)
        await self._pool.execute(
            "UPDATE rebuilds SET status = $2,"
            " finished_at = CASE WHEN $3 THEN now() ELSE finished_at END"
            " WHERE rebuild_id = $1",
            rebuild.rebuild_id,
            status.value,
            finished,
        )

    async def add_active_time(self, rebuild: Rebuild, seconds: float) -> None:
        """Account running time of one invocation."""
        await self._pool.execute(
            "UPDATE rebuilds SET active_s = active_s + $2 WHERE rebuild_id = $1",
            rebuild.rebuild_id,
            seconds,
        )

    # -- staging ---------------------------------------------------------------

    async def enroll(self, rebuild: Rebuild) -> int:
        """Add the scope's streams known to the checkpoints (of orgs not yet switched)."""
        status = await self._pool.execute(
            _ENROLL,
            rebuild.rebuild_id,
            rebuild.scope.projection.stream_prefix,
            rebuild.scope.org_id,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def streams(
        self,
        rebuild: Rebuild,
        org_id: str = "",
        *,
        after: str = "",
        limit: int = 1_000,
        behind_only: bool = False,
    ) -> list[StagedStream]:
        """A page of enrolled streams of orgs not yet switched (optionally one org,
        optionally only those behind), in stream_id order after `after`."""
        rows = await self._pool.fetch(
            _STREAMS, rebuild.rebuild_id, org_id, after, limit, behind_only
        )
        return [
            StagedStream(
                stream_ref(r["stream_id"], r["org_id"]), r["staged_seq"], r["checkpoint_seq"]
            )
            for r in rows
        ]

    async def all_streams(self, rebuild: Rebuild, org_id: str) -> list[StagedStream]:
        """Every enrolled stream of one org not yet switched."""
        streams: list[StagedStream] = []
        while True:
            after = streams[-1].stream.stream_id if streams else ""
            page = await self.streams(rebuild, org_id, after=after)
            streams += page
            if len(page) < 1_000:
                return streams

    async def staged_doc(self, rebuild: Rebuild, stream_id: str) -> bytes | None:
        """The document staged so far for a stream (None: nothing staged)."""
        doc: bytes | None = await self._pool.fetchval(
            "SELECT doc FROM rebuild_streams WHERE rebuild_id = $1 AND stream_id = $2",
            rebuild.rebuild_id,
            stream_id,
        )
        return doc

    async def pending_orgs(self, rebuild: Rebuild) -> list[str]:
        """Orgs with enrolled streams that are not switched yet."""
        return [row["org_id"] for row in await self._pool.fetch(_ORGS, rebuild.rebuild_id)]

    async def stream_count(self, rebuild: Rebuild) -> int:
        """Streams enrolled in the rebuild, switched or not."""
        value = await self._pool.fetchval(
            "SELECT count(*) FROM rebuild_streams WHERE rebuild_id = $1", rebuild.rebuild_id
        )
        return int(value)

    async def progress(self, rebuild: Rebuild) -> Progress:
        """Streams enrolled and staged up to their checkpoint, and orgs left to switch."""
        row = await self._pool.fetchrow(_PROGRESS, rebuild.rebuild_id)
        assert row is not None
        return Progress(row["streams"], row["staged"], row["orgs"])

    async def stage(
        self, rebuild: Rebuild, folded: Folded, expected_staged_seq: int, now_ms: int
    ) -> None:
        """Append a folded chunk to the new epoch and record the stream's progress."""
        async with self._pool.acquire() as conn, conn.transaction():
            await stage_chunk(conn, rebuild, folded, expected_staged_seq, now_ms)

    # -- switch ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def switching(self, rebuild: Rebuild, org_id: str) -> AsyncIterator[OrgSwitch]:
        """One transaction switching `org_id` to the rebuild's epoch (commits on exit)."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield OrgSwitch(conn, rebuild, org_id)

    # -- cleanup ---------------------------------------------------------------

    async def clean_old_epochs(self, rebuild_id: int = 0, batch: int = 5_000) -> int:
        """Delete the frames of epochs replaced by switches (one rebuild, or all: 0)."""
        deleted = 0
        while True:
            todo = await self._pool.fetch(_TO_CLEAN, rebuild_id, 100)
            if not todo:
                return deleted
            for row in todo:
                while True:
                    status = await self._pool.execute(
                        _DELETE_EPOCH_BATCH, row["topic"], row["old_epoch"], batch
                    )
                    count = int(status.rsplit(" ", 1)[-1])
                    deleted += count
                    if count < batch:
                        break
                await self._pool.execute(
                    "UPDATE rebuild_topics SET cleaned_at = now()"
                    " WHERE rebuild_id = $1 AND topic = $2",
                    row["rebuild_id"],
                    row["topic"],
                )

    async def discard_staged(self, rebuild: Rebuild, batch: int = 5_000) -> int:
        """Delete the staged frames of topics the rebuild never switched."""
        topics = await self._pool.fetch(
            "SELECT topic FROM rebuild_topics WHERE rebuild_id = $1 AND switched_at IS NULL",
            rebuild.rebuild_id,
        )
        deleted = 0
        for row in topics:
            while True:
                status = await self._pool.execute(
                    _DELETE_EPOCH_BATCH, row["topic"], rebuild.epoch, batch
                )
                count = int(status.rsplit(" ", 1)[-1])
                deleted += count
                if count < batch:
                    break
        return deleted

    async def summary(self) -> list[asyncpg.Record]:
        """Per projection: unfinished rebuild progress and the last finished duration."""
        rows: list[asyncpg.Record] = await self._pool.fetch(
            """
            SELECT p.projection,
                   (SELECT count(*) FROM rebuilds AS r
                    WHERE r.projection = p.projection
                      AND r.status IN ('staging', 'switched')) AS active,
                   (SELECT r.active_s FROM rebuilds AS r
                    WHERE r.projection = p.projection AND r.status = 'done'
                    ORDER BY r.finished_at DESC LIMIT 1) AS last_duration_s,
                   (SELECT avg(CASE WHEN rs.staged_seq >= coalesce(c.last_seq, 0)
                                    THEN 1.0 ELSE 0.0 END)
                    FROM rebuilds AS r
                    JOIN rebuild_streams AS rs ON rs.rebuild_id = r.rebuild_id
                    LEFT JOIN checkpoints AS c ON c.stream_id = rs.stream_id
                    WHERE r.projection = p.projection AND r.status = 'staging') AS progress
            FROM (VALUES ('runs'), ('workers')) AS p(projection)
            """
        )
        return rows
