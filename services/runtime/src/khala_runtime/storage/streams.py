"""SQL over stream heads of both kinds (runs and workers), for `verify`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool

_HEADS = (
    "SELECT 'run:' || run_id AS stream_id, last_seq, chain_hash FROM runs "
    "UNION ALL "
    "SELECT 'worker:' || worker_id AS stream_id, last_seq, chain_hash FROM workers"
)


@dataclass(frozen=True)
class StreamHead:
    """A stream's recorded head: its last seq and chain hash."""

    stream_id: str
    last_seq: int
    chain_hash: str


async def stream_head(db: Executor, stream_id: str) -> StreamHead | None:
    """The recorded head of one stream (`run:<id>` or `worker:<id>`)."""
    kind, _, subject = stream_id.partition(":")
    if kind == "run":
        sql = "SELECT last_seq, chain_hash FROM runs WHERE run_id = $1"
    elif kind == "worker":
        sql = "SELECT last_seq, chain_hash FROM workers WHERE worker_id = $1"
    else:
        return None
    row = await db.fetchrow(sql, subject)
    return None if row is None else StreamHead(stream_id, row[0], row[1])


async def stream_heads(db: Executor, *, after: str, limit: int) -> list[StreamHead]:
    """Up to `limit` stream heads with stream_id > `after`, in stream_id order."""
    rows = await db.fetch(
        f"SELECT * FROM ({_HEADS}) AS h WHERE stream_id > $1 ORDER BY stream_id LIMIT $2",
        after,
        limit,
    )
    return [StreamHead(row[0], row[1], row[2]) for row in rows]


@dataclass(frozen=True)
class StreamListing:
    """A stream for enumeration: its org, head seq and the head event's time."""

    stream_id: str
    org_id: str
    head_seq: int
    head_occurred_at_ms: int


_LISTING = {
    "run": "SELECT 'run:' || run_id AS stream_id, org_id, last_seq, updated_at_ms FROM runs",
    "worker": "SELECT 'worker:' || worker_id AS stream_id, org_id, last_seq, updated_at_ms FROM workers",
}


async def list_streams(
    db: Executor, *, org_id: str | None, kinds: tuple[str, ...], after: str, limit: int
) -> list[StreamListing]:
    """Up to `limit` streams of `kinds` (optionally one org) with stream_id > `after`."""
    union = " UNION ALL ".join(_LISTING[kind] for kind in kinds)
    rows = await db.fetch(
        f"SELECT * FROM ({union}) AS s WHERE stream_id > $1 AND ($2::text IS NULL OR org_id = $2) "
        "ORDER BY stream_id LIMIT $3",
        after,
        org_id,
        limit,
    )
    return [StreamListing(row[0], row[1], row[2], row[3]) for row in rows]
