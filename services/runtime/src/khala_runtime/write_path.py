"""The transactional write path shared by runs and workers.

Guarantee (DESIGN invariant 7): an append runs in ONE transaction that the
caller opened by locking the stream's head row (the same statement reads the
recorded idempotency keys among the request's): resolve idempotency keys,
plan (expected_seq, state machine, gapless seq, hash chain), insert the events
and their outbox rows, advance the head, record the keys, NOTIFY the relay.
When the caller's transaction commits, events and outbox rows are durable
together, so an accepted event is never lost and is always eventually
published. A replay (same keys, same request hash) returns the original
receipt and writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.append import AppendPlan
from khala_runtime.domain.idempotency import replayed_receipt, request_hash, request_keys
from khala_runtime.storage import events as event_sql
from khala_runtime.storage.events import HeadWrite
from openagents.runtime.v1.events_pb2 import EventInput, Receipt

H = TypeVar("H")
T = TypeVar("T")
IDEMPOTENCY_KEYS_PK = "idempotency_keys_pkey"
Authorize = Callable[[str], None]


async def retrying_key_race(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run an append attempt; retry it once if it lost an idempotency-key race.

    The lock statement reads the recorded keys with the snapshot it started
    with. If an append carrying the same key committed while this one waited
    for the row lock, the key is not seen, and the key insert then violates
    the primary key: the transaction rolls back with nothing written, and the
    retry sees the key (a replay or a conflict, as for any repeat).
    """
    try:
        return await attempt()
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != IDEMPOTENCY_KEYS_PK:
            raise
    metrics.KEY_RACE_RETRIES.inc()
    return await attempt()


def allow_all(_: str) -> None:
    """The authorization of trusted callers (gRPC, tools)."""
    return None


class KeyedRequest:
    """The idempotency keys of a request and its hash (computed only if keyed)."""

    def __init__(self, inputs: Sequence[EventInput]) -> None:
        self.keys = request_keys(inputs)
        self.hash = request_hash(inputs) if self.keys else ""


async def persist_events(
    conn: asyncpg.Connection, plan: AppendPlan[H], routing_key: str, now_ms: int
) -> None:
    """Insert a new stream's first events and their outbox rows (the head row is
    inserted by the caller), and ring the relay at commit."""
    await event_sql.write_batch(conn, plan.events, routing_key=routing_key, now_ms=now_ms)


async def append_locked(
    conn: asyncpg.Connection,
    *,
    stream_id: str,
    request: KeyedRequest,
    found_keys: Sequence[Any],
    plan: Callable[[], AppendPlan[H]],
    routing_key: str,
    now_ms: int,
    head_write: Callable[[H], HeadWrite],
) -> tuple[Receipt, bool]:
    """Inside the caller's transaction, with the head locked: (receipt, replayed?)."""
    if found_keys:
        found = await event_sql.key_records(conn, stream_id, found_keys)
        original = replayed_receipt(request.keys, found, request.hash)
        if original is not None:
            return original, True
    planned = plan()
    await event_sql.write_batch(
        conn,
        planned.events,
        routing_key=routing_key,
        now_ms=now_ms,
        head=head_write(planned.head),
        keys=request.keys,
        request_hash=request.hash,
    )
    return planned.receipt, False
