"""The transactional write path shared by runs and workers.

`append_to_stream` is the one append path of every kind of stream; an
`AppendTarget` says what differs between kinds (the head row, the plan with
its state machine, the routing key, the not-found error).

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
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.append import AppendPlan, StreamHead
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.idempotency import replayed_receipt, request_hash, request_keys
from khala_runtime.storage import events as event_sql
from khala_runtime.storage.events import HeadWrite
from openagents.runtime.v1.events_pb2 import EventInput, Receipt

H = TypeVar("H")
HeadT = TypeVar("HeadT", bound=StreamHead[Any])
T = TypeVar("T")
IDEMPOTENCY_KEYS_PK = "idempotency_keys_pkey"
Authorize = Callable[[str], None]
LockHead = Callable[
    [asyncpg.Connection, str, Sequence[str]], Awaitable[tuple[H, int, list[Any]] | None]
]


class PlanAppend(Protocol[H]):
    """A stream kind's pure append plan (`plan_append`, `plan_worker_append`)."""

    def __call__(
        self,
        head: H,
        inputs: Sequence[EventInput],
        *,
        expected_seq: int | None,
        now_ms: int,
        event_ids: Sequence[str],
    ) -> AppendPlan[H]: ...


@dataclass(frozen=True)
class AppendTarget(Generic[HeadT]):
    """What differs between the kinds of stream an append goes to."""

    kind: str  # "run" | "worker": with the subject id, the global lock order
    lock: LockHead[HeadT]  # lock the head row; (head, commit clock, recorded keys)
    plan: PlanAppend[HeadT]
    head_write: Callable[[HeadT], HeadWrite]
    routing_key: Callable[[str], str]  # of the head's org
    not_found: Callable[[str], DomainError]  # of the subject id


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


async def append_to_stream(
    pool: asyncpg.Pool,
    target: AppendTarget[HeadT],
    subject_id: str,
    inputs: Sequence[EventInput],
    *,
    expected_seq: int | None,
    authorize: Authorize,
    new_ids: Callable[[int], list[str]],
) -> tuple[Receipt, bool]:
    """Append checked events to one stream and count the outcome; (receipt, replayed?)."""

    async def attempt() -> tuple[Receipt, bool]:
        request = KeyedRequest(inputs)
        async with pool.acquire() as conn, conn.transaction():
            locked = await target.lock(conn, subject_id, request.keys)
            if locked is None:
                raise target.not_found(subject_id)
            head, now, found_keys = locked
            authorize(head.org_id)
            return await append_locked(
                conn,
                stream_id=head.stream_id,
                request=request,
                found_keys=found_keys,
                plan=lambda: target.plan(
                    head,
                    inputs,
                    expected_seq=expected_seq,
                    now_ms=now,
                    event_ids=new_ids(len(inputs)),
                ),
                routing_key=target.routing_key(head.org_id),
                now_ms=now,
                head_write=target.head_write,
            )

    return await _counted(attempt, len(inputs))


async def _counted(
    attempt: Callable[[], Awaitable[tuple[Receipt, bool]]], events: int
) -> tuple[Receipt, bool]:
    """Run an append attempt (again if it lost a key race) and count its outcome."""
    try:
        outcome = await retrying_key_race(attempt)
    except DomainError as exc:
        count_outcome(exc, events)
        raise
    count_outcome(outcome, events)
    return outcome


def count_outcome(outcome: tuple[Receipt, bool] | DomainError, events: int) -> None:
    """Count an append's outcome: its error code, or appended / replayed."""
    if isinstance(outcome, DomainError):
        metrics.APPENDS.labels(outcome.code).inc()
        return
    replayed = outcome[1]
    metrics.APPENDS.labels("replayed" if replayed else "appended").inc()
    if not replayed:
        metrics.EVENTS_APPENDED.inc(events)
