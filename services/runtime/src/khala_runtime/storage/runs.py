"""SQL over `runs`: create, lock, read and advance a run's head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from khala_runtime.domain.model import RunHead
from khala_runtime.domain.run_state import RunStatus
from khala_runtime.storage.events import HEAD_ARGS_FROM, HeadWrite, found_keys_sql

NOW_MS_SQL = "(extract(epoch from now()) * 1000)::bigint"
_COLUMNS = (
    "run_id, org_id, title, status, last_seq, chain_hash, created_at_ms, updated_at_ms"
)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool
_FOUND_KEYS = found_keys_sql("'run:' || $1", "$2")


def _head(row: Any) -> RunHead:
    return RunHead(
        run_id=row["run_id"],
        org_id=row["org_id"],
        title=row["title"],
        status=RunStatus(row["status"]),
        last_seq=row["last_seq"],
        chain_hash=row["chain_hash"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
    )


async def now_ms(conn: asyncpg.Connection) -> int:
    """The transaction's commit clock in epoch milliseconds (Postgres `now()`)."""
    value: int = await conn.fetchval(f"SELECT {NOW_MS_SQL}")
    return value


async def insert_run(conn: asyncpg.Connection, head: RunHead) -> bool:
    """Insert a new run; False if the run id already exists."""
    inserted = await conn.fetchval(
        f"INSERT INTO runs ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (run_id) DO NOTHING RETURNING true",
        head.run_id,
        head.org_id,
        head.title,
        head.status.value,
        head.last_seq,
        head.chain_hash,
        head.created_at_ms,
        head.updated_at_ms,
    )
    return bool(inserted)


async def lock_run(
    conn: asyncpg.Connection, run_id: str, keys: Sequence[str]
) -> tuple[RunHead, int, list[Any]] | None:
    """Lock a run's row for this transaction; its head, the commit clock and the
    recorded idempotency keys among `keys` (as of the statement's snapshot)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms, "
        f"{_FOUND_KEYS} FROM runs WHERE run_id = $1 FOR UPDATE",
        run_id,
        list(keys),
    )
    return None if row is None else (_head(row), row["now_ms"], row["found_keys"])


async def get_run(db: Executor, run_id: str) -> RunHead | None:
    """A run's committed head."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM runs WHERE run_id = $1", run_id)
    return None if row is None else _head(row)


def head_write(head: RunHead) -> HeadWrite:
    """The CTE that advances a locked run's head within `write_batch`."""
    n = HEAD_ARGS_FROM
    return HeadWrite(
        f"h AS (UPDATE runs SET status = ${n}, last_seq = ${n + 1}::bigint, "
        f"chain_hash = ${n + 2}, updated_at_ms = ${n + 3}::bigint WHERE run_id = $11)",
        (head.status.value, head.last_seq, head.chain_hash, head.updated_at_ms),
    )


async def list_runs(
    db: Executor, org_id: str, *, limit: int, before: tuple[int, str] | None
) -> list[RunHead]:
    """An org's runs, newest first, strictly after the keyset cursor `before`."""
    if before is None:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM runs WHERE org_id = $1 "
            "ORDER BY created_at_ms DESC, run_id DESC LIMIT $2",
            org_id,
            limit,
        )
    else:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM runs WHERE org_id = $1 "
            "AND (created_at_ms, run_id) < ($2, $3) "
            "ORDER BY created_at_ms DESC, run_id DESC LIMIT $4",
            org_id,
            before[0],
            before[1],
            limit,
        )
    return [_head(row) for row in rows]
