"""The revocation outbox: rows written with the revocation, published later."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class OutboxMessage:
    """One revocation waiting for the broker's confirm."""

    outbox_id: int
    message_id: str
    routing_key: str
    body: bytes


async def enqueue(conn: asyncpg.Connection, message_id: str, routing_key: str, body: bytes) -> None:
    """Add a message (call inside the transaction that makes the change)."""
    await conn.execute(
        "INSERT INTO revocation_outbox (message_id, routing_key, body) VALUES ($1, $2, $3)",
        message_id,
        routing_key,
        body,
    )


async def claim_pending(conn: asyncpg.Connection, limit: int) -> list[OutboxMessage]:
    """Unpublished messages in commit order, locked; other relays skip them."""
    rows = await conn.fetch(
        """
        SELECT outbox_id, message_id, routing_key, body FROM revocation_outbox
        WHERE published_at IS NULL ORDER BY outbox_id LIMIT $1
        FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return [
        OutboxMessage(row["outbox_id"], row["message_id"], row["routing_key"], row["body"])
        for row in rows
    ]


async def mark_published(conn: asyncpg.Connection, outbox_id: int) -> None:
    """Record the broker's confirm for one message."""
    await conn.execute(
        "UPDATE revocation_outbox SET published_at = now() WHERE outbox_id = $1", outbox_id
    )


async def purge_published(conn: asyncpg.Connection, older_than_s: float) -> int:
    """Delete messages published more than `older_than_s` ago; returns how many."""
    status = await conn.execute(
        """
        DELETE FROM revocation_outbox
        WHERE published_at < now() - make_interval(secs => $1)
        """,
        older_than_s,
    )
    return int(status.split()[-1])
