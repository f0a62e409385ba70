"""SQL over `events`, `idempotency_keys` and the outbox insert side.

A batch of hundreds of events is written by one statement (`write_batch`):
multi-row `INSERT ... SELECT FROM unnest(...)` into each table, in CTEs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from khala_runtime.domain.idempotency import KeyRecord
from openagents.runtime.v1.events_pb2 import Receipt, RuntimeEvent

OUTBOX_CHANNEL = "runtime_outbox"
_EVENT_COLUMNS = (
    "stream_id, stream_seq, event_id, org_id, stream_kind, subject_id, type, "
    "payload_json, idempotency_key, occurred_at_ms, chain_hash"
)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


# One statement writes a batch: its events, their outbox rows (in stream order,
# so outbox ids follow seq), optionally the head update and the idempotency
# keys, and the relay's doorbell (Postgres delivers NOTIFY at commit). Values
# shared by the whole batch travel once, as scalars.
_WRITE_HEAD = (
    "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], "
    "$5::text[], $6::bytea[]) WITH ORDINALITY "
    "AS t(event_id, type, payload_json, idempotency_key, chain_hash, body, n)), "
    f"e AS (INSERT INTO events ({_EVENT_COLUMNS}) "
    "SELECT $7, $8::bigint + n - 1, event_id, $9, $10::smallint, $11, type, payload_json, "
    "idempotency_key, $12::bigint, chain_hash FROM input), "
    "o AS (INSERT INTO outbox (event_id, routing_key, body, created_at_ms) "
    "SELECT event_id, $13, body, $14::bigint FROM input ORDER BY n), "
    "k AS (INSERT INTO idempotency_keys "
    "(stream_id, key, request_hash, first_seq, last_seq, created_at_ms) "
    "SELECT $7, key, $15, $8::bigint, $16::bigint, $14::bigint FROM unnest($17::text[]) AS key)"
)
_WRITE_TAIL = f" SELECT pg_notify('{OUTBOX_CHANNEL}', '')"
HEAD_ARGS_FROM = 18
"""Parameter number of the first argument of a head-update CTE (`$18`); the
stream's subject id (run_id / worker_id) is `$11`."""


@dataclass(frozen=True)
class HeadWrite:
    """A CTE `h AS (UPDATE ...)` advancing the stream's head, and its arguments."""

    cte: str
    args: tuple[object, ...]


_SQL_CACHE: dict[str, str] = {}


def _write_sql(head_cte: str) -> str:
    sql = _SQL_CACHE.get(head_cte)
    if sql is None:
        sql = _WRITE_HEAD + (f", {head_cte}" if head_cte else "") + _WRITE_TAIL
        _SQL_CACHE[head_cte] = sql
    return sql


async def write_batch(
    conn: asyncpg.Connection,
    events: Sequence[RuntimeEvent],
    *,
    routing_key: str,
    now_ms: int,
    head: HeadWrite | None = None,
    keys: Sequence[str] = (),
    request_hash: str = "",
) -> None:
    """Write one batch of a stream (events share stream, org and commit time) with
    its outbox rows, optionally its head update and idempotency keys, in ONE
    statement."""
    first = events[0]
    await conn.execute(
        _write_sql(head.cte if head else ""),
        [e.event_id for e in events],  # asyncpg encodes uuid from its text form
        [e.type for e in events],
        [e.payload_json for e in events],
        [e.idempotency_key or None for e in events],
        [e.chain_hash for e in events],
        [e.SerializeToString() for e in events],
        first.stream_id,
        first.stream_seq,
        first.org_id,
        int(first.stream_kind),
        first.subject_id,
        first.occurred_at_ms,
        routing_key,
        now_ms,
        request_hash,
        events[-1].stream_seq,
        list(keys),
        *(head.args if head else ()),
    )


def _event(row: Any) -> RuntimeEvent:
    return RuntimeEvent(
        event_id=str(row["event_id"]),
        stream_id=row["stream_id"],
        org_id=row["org_id"],
        stream_kind=row["stream_kind"],
        subject_id=row["subject_id"],
        stream_seq=row["stream_seq"],
        type=row["type"],
        payload_json=bytes(row["payload_json"]),
        idempotency_key=row["idempotency_key"] or "",
        occurred_at_ms=row["occurred_at_ms"],
        chain_hash=row["chain_hash"],
    )


async def read_events(
    db: Executor, stream_id: str, *, after_seq: int, up_to_seq: int, limit: int
) -> list[RuntimeEvent]:
    """Events with after_seq < stream_seq <= up_to_seq, in order, at most `limit`."""
    rows = await db.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events "
        "WHERE stream_id = $1 AND stream_seq > $2 AND stream_seq <= $3 "
        "ORDER BY stream_seq LIMIT $4",
        stream_id,
        after_seq,
        up_to_seq,
        limit,
    )
    return [_event(row) for row in rows]


def found_keys_sql(stream_id_sql: str, keys_param: str) -> str:
    """A select-list item `found_keys`: the recorded idempotency keys of the stream
    among `keys_param`, as records (key, request_hash, receipt, first_seq, last_seq)."""
    return (
        "ARRAY(SELECT ROW(key, request_hash, receipt, first_seq, last_seq) "
        f"FROM idempotency_keys WHERE stream_id = {stream_id_sql} "
        f"AND key = ANY({keys_param}::text[])) AS found_keys"
    )


async def key_records(
    conn: asyncpg.Connection, stream_id: str, found: Sequence[Any]
) -> list[KeyRecord]:
    """KeyRecords of `found_keys` rows, with the receipt of the append that recorded
    each (rebuilt from the log for rows that store a seq range)."""
    rebuilt: dict[tuple[int, int], Receipt] = {}
    records = []
    for key, request_hash, stored, first_seq, last_seq in found:
        if stored is not None:
            receipt = Receipt.FromString(bytes(stored))
        else:
            span = (first_seq, last_seq)
            if span not in rebuilt:
                rebuilt[span] = await _receipt_from_log(conn, stream_id, *span)
            receipt = rebuilt[span]
        records.append(KeyRecord(key, request_hash, receipt))
    return records


async def _receipt_from_log(
    conn: asyncpg.Connection, stream_id: str, first_seq: int, last_seq: int
) -> Receipt:
    """The receipt of the append that wrote seqs first..last (the log is immutable)."""
    rows = await conn.fetch(
        "SELECT event_id, chain_hash FROM events WHERE stream_id = $1 "
        "AND stream_seq BETWEEN $2 AND $3 ORDER BY stream_seq",
        stream_id,
        first_seq,
        last_seq,
    )
    return Receipt(
        stream_id=stream_id,
        first_seq=first_seq,
        last_seq=last_seq,
        event_ids=[str(row["event_id"]) for row in rows],
        chain_hash=rows[-1]["chain_hash"],
    )
