"""SQL over `events`, `idempotency_keys` and the outbox insert side.

Multi-row writes use one `INSERT ... SELECT FROM unnest(...)` per table, so an
append of hundreds of events costs a handful of round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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


async def insert_events(conn: asyncpg.Connection, events: Sequence[RuntimeEvent]) -> None:
    """Insert events in one statement."""
    await conn.execute(
        f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT * FROM unnest("
        "$1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::smallint[], $6::text[], "
        "$7::text[], $8::bytea[], $9::text[], $10::bigint[], $11::text[])",
        [e.stream_id for e in events],
        [e.stream_seq for e in events],
        [uuid.UUID(e.event_id) for e in events],
        [e.org_id for e in events],
        [int(e.stream_kind) for e in events],
        [e.subject_id for e in events],
        [e.type for e in events],
        [e.payload_json for e in events],
        [e.idempotency_key or None for e in events],
        [e.occurred_at_ms for e in events],
        [e.chain_hash for e in events],
    )


async def insert_outbox(
    conn: asyncpg.Connection, events: Sequence[RuntimeEvent], routing_key: str, now_ms: int
) -> None:
    """Queue events for the relay, in stream order, and ring its doorbell at commit."""
    await conn.execute(
        "INSERT INTO outbox (event_id, routing_key, body, created_at_ms) "
        "SELECT event_id, routing_key, body, created_at_ms "
        "FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bigint[]) "
        "WITH ORDINALITY AS t(event_id, routing_key, body, created_at_ms, n) ORDER BY n",
        [uuid.UUID(e.event_id) for e in events],
        [routing_key] * len(events),
        [e.SerializeToString() for e in events],
        [now_ms] * len(events),
    )
    await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")


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


async def find_keys(
    conn: asyncpg.Connection, stream_id: str, keys: Sequence[str]
) -> list[KeyRecord]:
    """Recorded idempotency keys of `stream_id` among `keys`."""
    rows = await conn.fetch(
        "SELECT key, request_hash, receipt FROM idempotency_keys "
        "WHERE stream_id = $1 AND key = ANY($2::text[])",
        stream_id,
        list(keys),
    )
    return [
        KeyRecord(row["key"], row["request_hash"], Receipt.FromString(bytes(row["receipt"])))
        for row in rows
    ]


async def insert_keys(
    conn: asyncpg.Connection,
    stream_id: str,
    keys: Sequence[str],
    request_hash: str,
    receipt: Receipt,
    now_ms: int,
) -> None:
    """Record the idempotency keys of an accepted append with its receipt."""
    body = receipt.SerializeToString()
    await conn.execute(
        "INSERT INTO idempotency_keys (stream_id, key, request_hash, receipt, created_at_ms) "
        "SELECT $1, k, $3, $4, $5 FROM unnest($2::text[]) AS k",
        stream_id,
        list(keys),
        request_hash,
        body,
        now_ms,
    )
