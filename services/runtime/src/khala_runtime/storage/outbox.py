"""SQL of the outbox relay: read unpublished rows in id order, mark, prune."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class OutboxRow:
    """One queued event: its id order, message id, routing key, body and the
    traceparent and request id of the append that wrote it (None outside a trace)."""

    id: int
    event_id: str
    routing_key: str
    body: bytes
    created_at_ms: int
    traceparent: str | None = None
    request_id: str | None = None


async def fetch_unpublished(conn: asyncpg.Connection, limit: int) -> list[OutboxRow]:
    """The oldest unpublished rows, in id order."""
    rows = await conn.fetch(
        "SELECT id, event_id, routing_key, body, created_at_ms, traceparent, request_id "
        "FROM outbox "
        "WHERE published_at IS NULL ORDER BY id LIMIT $1",
        limit,
    )
    return [
        OutboxRow(
            r["id"],
            str(r["event_id"]),
            r["routing_key"],
            bytes(r["body"]),
            r["created_at_ms"],
            r["traceparent"],
            r["request_id"],
        )
        for r in rows
    ]


async def mark_published(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    """Mark rows the broker confirmed."""
    await conn.execute(
        "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids)
    )


async def backlog(db: asyncpg.Connection | asyncpg.Pool) -> int:
    """How many rows wait to be published."""
    count: int = await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return count


async def prune_published(conn: asyncpg.Connection, older_than_s: float, limit: int) -> int:
    """Delete up to `limit` rows published more than `older_than_s` ago."""
    result: str = await conn.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < "
        "now() - make_interval(secs => $1) ORDER BY published_at LIMIT $2)",
        older_than_s,
        limit,
    )
    return int(result.split()[-1])
