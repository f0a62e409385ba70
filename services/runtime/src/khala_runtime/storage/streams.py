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
