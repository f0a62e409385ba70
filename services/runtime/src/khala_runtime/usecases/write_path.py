"""The transactional write path shared by runs and workers.

`commit_appends` is the one append path of every kind of stream: the group
committer (`group_commit.py`) runs it for several appends at once, and
`append_to_stream` for a single one. An `AppendTarget` says what differs
between kinds (the head rows, the plan with its state machine, the routing
key, the not-found error).

Guarantee (DESIGN invariant 7): appends are committed in ONE transaction that
first locks every involved stream's head row (one statement, in id order; it
also reads the recorded idempotency keys among the requests'). Then, per
append: resolve its idempotency keys, authorize, plan (expected_seq, state
machine, gapless seq, hash chain). Then ONE statement inserts every planned
append's events and outbox rows, records the keys, advances the heads and
rings the relay. When the transaction commits, events and outbox rows are
durable together, so an accepted event is never lost and is always eventually
published. A refused append (not found, forbidden, 409) writes nothing and
does not disturb the others. A replay (same keys, same request hash) returns
the original receipt and writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from khala_common.telemetry import current_traceparent
from khala_common.telemetry import request_id as current_request_id
from khala_runtime import metrics
from khala_runtime.domain.actor import TRUSTED_SERVICE, Actor
from khala_runtime.domain.append import AppendPlan, StreamHead
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.idempotency import replayed_receipt, request_hash, request_keys
from khala_runtime.storage import events as event_sql
from khala_runtime.storage.events import HeadsWrite, StreamWrite
from openagents.runtime.v1.events_pb2 import EventInput, Receipt

H = TypeVar("H")
HeadT = TypeVar("HeadT", bound=StreamHead[Any])
T = TypeVar("T")
IDEMPOTENCY_KEYS_PK = "idempotency_keys_pkey"
Authorize = Callable[[str], None]
Outcome = tuple[Receipt, bool]
LockHeads = Callable[
    [asyncpg.Connection, Sequence[str], Sequence[tuple[str, str]]],
    Awaitable[tuple[int, dict[str, tuple[H, list[Any]]]]],
]


ReadHeads = Callable[[asyncpg.Pool, Sequence[str]], Awaitable[dict[str, H]]]


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
    lock: LockHeads[HeadT]  # lock head rows in id order; (commit clock, {id: (head, keys)})
    read: ReadHeads[HeadT]  # committed heads, no lock: {id: head}
    plan: PlanAppend[HeadT]
    heads_write: Callable[[Sequence[HeadT], Sequence[HeadT] | None], HeadsWrite]
    routing_key: Callable[[str], str]  # of the head's org
    not_found: Callable[[str], DomainError]  # of the subject id


class KeyedRequest:
    """The idempotency keys of a request and its hash (computed only if keyed)."""

    def __init__(self, inputs: Sequence[EventInput]) -> None:
        self.keys = request_keys(inputs)
        self.hash = request_hash(inputs) if self.keys else ""


@dataclass(eq=False)
class Append:
    """One append request to one stream, and who makes it."""

    subject_id: str
    inputs: Sequence[EventInput]
    expected_seq: int | None
    authorize: Authorize
    actor: Actor = TRUSTED_SERVICE
    request: KeyedRequest = field(init=False)
    traceparent: str | None = field(init=False)
    """The trace of the request that made it (captured here, in its context)."""
    request_id: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.request = KeyedRequest(self.inputs)
        self.traceparent = current_traceparent()
        self.request_id = current_request_id()


async def commit_appends(
    conn: asyncpg.Connection,
    target: AppendTarget[HeadT],
    appends: Sequence[Append],
    new_ids: Callable[[int], list[str]],
) -> list[Outcome | DomainError]:
    """Inside the caller's transaction: lock, plan and write appends to DISTINCT
    streams of one kind; each append's outcome (receipt, replayed?) or refusal."""
    now, locked = await target.lock(
        conn,
        [a.subject_id for a in appends],
        [(a.subject_id, key) for a in appends for key in a.request.keys],
    )
    outcomes: list[Outcome | DomainError] = []
    writes: list[StreamWrite] = []
    heads: list[HeadT] = []
    for append in appends:
        found = locked.get(append.subject_id)
        if found is None:
            outcomes.append(target.not_found(append.subject_id))
            continue
        head, found_keys = found
        try:
            outcome = await _plan_one(conn, target, append, head, found_keys, now, new_ids)
        except DomainError as exc:
            outcomes.append(exc)
            continue
        if isinstance(outcome, AppendPlan):
            writes.append(
                StreamWrite(
                    outcome.events,
                    target.routing_key(head.org_id),
                    append.request.keys,
                    append.request.hash,
                    append.actor,
                    append.traceparent,
                    append.request_id,
                )
            )
            heads.append(outcome.head)
            outcomes.append((outcome.receipt, False))
        else:
            outcomes.append((outcome, True))
    if writes:
        await event_sql.write_streams(
            conn, writes, now_ms=now, heads=target.heads_write(heads, None)
        )
    return outcomes


async def _plan_one(
    conn: asyncpg.Connection,
    target: AppendTarget[HeadT],
    append: Append,
    head: HeadT,
    found_keys: list[Any],
    now: int,
    new_ids: Callable[[int], list[str]],
) -> AppendPlan[HeadT] | Receipt:
    """Authorize, then the original receipt of a replay or the plan of a new append
    (raises DomainError for a refusal)."""
    append.authorize(head.org_id)
    if found_keys:
        records = await event_sql.key_records(conn, head.stream_id, found_keys)
        original = replayed_receipt(append.request.keys, records, append.request.hash)
        if original is not None:
            return original
    return target.plan(
        head,
        append.inputs,
        expected_seq=append.expected_seq,
        now_ms=now,
        event_ids=new_ids(len(append.inputs)),
    )


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


async def persist_events(
    conn: asyncpg.Connection,
    plan: AppendPlan[H],
    routing_key: str,
    now_ms: int,
    actor: Actor = TRUSTED_SERVICE,
) -> None:
    """Insert a new stream's first events (made by `actor`) and their outbox rows
    (the head row is inserted by the caller), and ring the relay at commit."""
    await event_sql.write_streams(
        conn,
        [
            StreamWrite(
                plan.events,
                routing_key,
                actor=actor,
                traceparent=current_traceparent(),
                request_id=current_request_id(),
            )
        ],
        now_ms=now_ms,
    )


async def append_to_stream(
    pool: asyncpg.Pool,
    target: AppendTarget[HeadT],
    append: Append,
    new_ids: Callable[[int], list[str]],
) -> Outcome:
    """Append to one stream in a transaction of its own and count the outcome;
    (receipt, replayed?). Raises the refusal as DomainError."""

    async def attempt() -> Outcome | DomainError:
        async with pool.acquire() as conn, conn.transaction():
            (outcome,) = await commit_appends(conn, target, [append], new_ids)
            return outcome

    outcome = await retrying_key_race(attempt)
    count_outcome(outcome, len(append.inputs))
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def count_outcome(outcome: Outcome | DomainError, events: int) -> None:
    """Count an append's outcome: its error code, or appended / replayed."""
    if isinstance(outcome, DomainError):
        metrics.APPENDS.labels(outcome.code).inc()
        return
    replayed = outcome[1]
    metrics.APPENDS.labels("replayed" if replayed else "appended").inc()
    if not replayed:
        metrics.EVENTS_APPENDED.inc(events)
