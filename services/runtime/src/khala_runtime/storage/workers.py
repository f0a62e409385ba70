"""SQL over `workers`: register, lock, read and advance a worker's head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from khala_runtime.domain.model import WorkerHead
from khala_runtime.domain.worker_state import WorkerStatus
from khala_runtime.storage.events import HeadsWrite, found_keys_sql, heads_update
from khala_runtime.storage.runs import NOW_MS_SQL, now_ms

_COLUMNS = (
    "worker_id, org_id, status, last_seq, chain_hash, last_heartbeat_at_ms, "
    "created_at_ms, updated_at_ms"
)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool
_LOCK = (
    f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms, "
    + found_keys_sql("'worker:' || workers.worker_id", "workers.worker_id")
    + " "
    "FROM workers WHERE worker_id = ANY($1::text[]) ORDER BY worker_id FOR UPDATE"
)


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


async def lock_workers(
    conn: asyncpg.Connection, worker_ids: Sequence[str], keys: Sequence[tuple[str, str]]
) -> tuple[int, dict[str, tuple[WorkerHead, list[Any]]]]:
    """Lock the head rows of `worker_ids` for this transaction, in id order (the
    global lock order); the commit clock, and per found worker its head and the
    recorded idempotency keys among the requested (id, key) pairs `keys` (as of
    the statement's snapshot)."""
    rows = await conn.fetch(
        _LOCK,
        list(worker_ids),
        [subject for subject, _ in keys],
        [key for _, key in keys],
    )
    now = rows[0]["now_ms"] if rows else await now_ms(conn)
    return now, {row["worker_id"]: (_head(row), row["found_keys"]) for row in rows}


async def get_worker(db: Executor, worker_id: str) -> tuple[WorkerHead, int] | None:
    """A worker's committed head and the database clock (epoch ms)."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms FROM workers WHERE worker_id = $1",
        worker_id,
    )
    return None if row is None else (_head(row), row["now_ms"])


def heads_write(
    heads: Sequence[WorkerHead], expected: Sequence[WorkerHead] | None = None
) -> HeadsWrite:
    """The CTE advancing workers' heads within `write_streams` (see `heads_update`)."""
    return heads_update(
        "workers",
        "worker",
        [h.worker_id for h in heads],
        [
            ("status", "text", [h.status.value for h in heads]),
            ("last_seq", "bigint", [h.last_seq for h in heads]),
            ("chain_hash", "text", [h.chain_hash for h in heads]),
            ("updated_at_ms", "bigint", [h.updated_at_ms for h in heads]),
            ("last_heartbeat_at_ms", "bigint", [h.last_heartbeat_at_ms for h in heads]),
        ],
        None if expected is None else [(h.last_seq, h.chain_hash) for h in expected],
    )


async def read_workers(db: Executor, worker_ids: Sequence[str]) -> dict[str, WorkerHead]:
    """The committed heads of the workers among `worker_ids` that exist (no lock)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM workers WHERE worker_id = ANY($1::text[])", list(worker_ids)
    )
    return {row["worker_id"]: _head(row) for row in rows}


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
