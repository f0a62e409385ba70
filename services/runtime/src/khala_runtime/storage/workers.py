"""SQL over `workers`: register, lock, read and advance a worker's head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from khala_runtime.domain.model import WorkerHead
from khala_runtime.domain.worker_state import WorkerStatus
from khala_runtime.storage.events import HEAD_ARGS_FROM, HeadWrite, found_keys_sql
from khala_runtime.storage.runs import NOW_MS_SQL

_COLUMNS = (
    "worker_id, org_id, status, last_seq, chain_hash, last_heartbeat_at_ms, "
    "created_at_ms, updated_at_ms"
)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool
_FOUND_KEYS = found_keys_sql("'worker:' || $1", "$2")


def _head(row: Any) -> WorkerHead:
    return WorkerHead(
        worker_id=row["worker_id"],
        org_id=row["org_id"],
        status=WorkerStatus(row["status"]),
        last_seq=row["last_seq"],
        chain_hash=row["chain_hash"],
        last_heartbeat_at_ms=row["last_heartbeat_at_ms"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
    )


async def insert_worker(conn: asyncpg.Connection, head: WorkerHead) -> bool:
    """Insert a new worker; False if the worker id already exists."""
    inserted = await conn.fetchval(
        f"INSERT INTO workers ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (worker_id) DO NOTHING RETURNING true",
        head.worker_id,
        head.org_id,
        head.status.value,
        head.last_seq,
        head.chain_hash,
        head.last_heartbeat_at_ms,
        head.created_at_ms,
        head.updated_at_ms,
    )
    return bool(inserted)


async def lock_worker(
    conn: asyncpg.Connection, worker_id: str, keys: Sequence[str]
) -> tuple[WorkerHead, int, list[Any]] | None:
    """Lock a worker's row for this transaction; its head, the commit clock and the
    recorded idempotency keys among `keys` (as of the statement's snapshot)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms, "
        f"{_FOUND_KEYS} FROM workers WHERE worker_id = $1 "
        "FOR UPDATE",
        worker_id,
        list(keys),
    )
    return None if row is None else (_head(row), row["now_ms"], row["found_keys"])


async def get_worker(db: Executor, worker_id: str) -> tuple[WorkerHead, int] | None:
    """A worker's committed head and the database clock (epoch ms)."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms FROM workers WHERE worker_id = $1",
        worker_id,
    )
    return None if row is None else (_head(row), row["now_ms"])


def head_write(head: WorkerHead) -> HeadWrite:
    """The CTE that advances a locked worker's head within `write_batch`."""
    n = HEAD_ARGS_FROM
    return HeadWrite(
        f"h AS (UPDATE workers SET status = ${n}, last_seq = ${n + 1}::bigint, "
        f"chain_hash = ${n + 2}, updated_at_ms = ${n + 3}::bigint, "
        f"last_heartbeat_at_ms = ${n + 4}::bigint WHERE worker_id = $11)",
        (head.status.value, head.last_seq, head.chain_hash, head.updated_at_ms,
         head.last_heartbeat_at_ms),
    )


async def list_workers(
    db: Executor, org_id: str, *, limit: int, before: tuple[int, str] | None
) -> tuple[list[WorkerHead], int]:
    """An org's workers, newest first, strictly after the keyset cursor `before`;
    with the database clock (epoch ms)."""
    cursor_sql = "AND (created_at_ms, worker_id) < ($3, $4) " if before else ""
    args: list[object] = [org_id, limit, *(before or ())]
    rows = await db.fetch(
        f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms FROM workers WHERE org_id = $1 "
        f"{cursor_sql}ORDER BY created_at_ms DESC, worker_id DESC LIMIT $2",
        *args,
    )
    if rows:
        return [_head(row) for row in rows], rows[0]["now_ms"]
    now: int = await db.fetchval(f"SELECT {NOW_MS_SQL}")
    return [], now
