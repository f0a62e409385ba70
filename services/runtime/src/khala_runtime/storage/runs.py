"""SQL over `runs`: create, lock, read and advance a run's head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from khala_runtime.domain.model import RunHead
from khala_runtime.domain.run_state import RunStatus
from khala_runtime.storage.events import HeadsWrite, found_keys_sql, heads_update

NOW_MS_SQL = "(extract(epoch from now()) * 1000)::bigint"
_COLUMNS = "run_id, org_id, title, status, last_seq, chain_hash, created_at_ms, updated_at_ms"

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool
_LOCK = (
    f"SELECT {_COLUMNS}, {NOW_MS_SQL} AS now_ms, "
    + found_keys_sql("'run:' || runs.run_id", "runs.run_id")
    + " "
    "FROM runs WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR UPDATE"
)


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


async def lock_runs(
    conn: asyncpg.Connection, run_ids: Sequence[str], keys: Sequence[tuple[str, str]]
) -> tuple[int, dict[str, tuple[RunHead, list[Any]]]]:
    """Lock the head rows of `run_ids` for this transaction, in id order (the
    global lock order); the commit clock, and per found run its head and the
    recorded idempotency keys among the requested (id, key) pairs `keys` (as of
    the statement's snapshot)."""
    rows = await conn.fetch(
        _LOCK,
        list(run_ids),
        [subject for subject, _ in keys],
        [key for _, key in keys],
    )
    now = rows[0]["now_ms"] if rows else await now_ms(conn)
    return now, {row["run_id"]: (_head(row), row["found_keys"]) for row in rows}


async def get_run(db: Executor, run_id: str) -> RunHead | None:
    """A run's committed head."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM runs WHERE run_id = $1", run_id)
    return None if row is None else _head(row)


def heads_write(heads: Sequence[RunHead], expected: Sequence[RunHead] | None = None) -> HeadsWrite:
    """The CTE advancing runs' heads within `write_streams` (see `heads_update`)."""
    return heads_update(
        "runs",
        "run",
        [h.run_id for h in heads],
        [
            ("status", "text", [h.status.value for h in heads]),
            ("last_seq", "bigint", [h.last_seq for h in heads]),
            ("chain_hash", "text", [h.chain_hash for h in heads]),
            ("updated_at_ms", "bigint", [h.updated_at_ms for h in heads]),
        ],
        None if expected is None else [(h.last_seq, h.chain_hash) for h in expected],
    )


async def read_runs(db: Executor, run_ids: Sequence[str]) -> dict[str, RunHead]:
    """The committed heads of the runs among `run_ids` that exist (no lock)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM runs WHERE run_id = ANY($1::text[])", list(run_ids)
    )
    return {row["run_id"]: _head(row) for row in rows}


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
