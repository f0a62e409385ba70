"""Group commit: concurrent appends to distinct streams share one transaction.

Guarantees (DESIGN invariant 7 and §4.1 hold per append, exactly as on the
single path in `write_path.py`):
- Durable before answered: an append's future resolves only after the group's
  COMMIT returned. A failed group answers every member with the error; nothing
  of it was committed (the transaction is all-or-nothing).
- Per-append isolation of domain outcomes: each member locks its stream's head
  row, then authorizes and plans purely (state machine, expected_seq, gapless
  seq, hash chain). A refused member (not found, forbidden, 409) writes nothing
  and gets its error; the others commit.
- One member per stream per group, and a stream with a group in flight waits
  for the next group: appends to one stream are still planned and committed
  strictly one after another, in arrival order.
- No deadlock: a group locks its head rows in one global order (kind, id),
  the same order every group and the single path (one row) follow.
- Idempotency races: if a statement hits another process's just-committed
  idempotency key, the whole group rolls back with nothing written and each
  member is retried alone on the single path (`append_to_stream`), which
  re-reads the keys. Any other failure is answered, never retried here, because
  after a lost connection the commit's outcome is unknown.

Batching costs no latency when idle: a group starts at once while fewer than
`max_inflight` groups run; under load, appends that arrive while groups are in
flight form the next group, so BEGIN/COMMIT, the WAL flush and a pool checkout
are shared by every append in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.append import AppendPlan
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.idempotency import replayed_receipt
from khala_runtime.storage import events as event_sql
from khala_runtime.write_path import (
    IDEMPOTENCY_KEYS_PK,
    AppendTarget,
    Authorize,
    KeyedRequest,
    append_to_stream,
    count_outcome,
)
from openagents.runtime.v1.events_pb2 import EventInput, Receipt

Outcome = tuple[Receipt, bool]


@dataclass(eq=False)
class _Pending:
    target: AppendTarget[Any]
    subject_id: str
    inputs: Sequence[EventInput]
    expected_seq: int | None
    authorize: Authorize
    future: asyncio.Future[Outcome]
    request: KeyedRequest = field(init=False)

    def __post_init__(self) -> None:
        self.request = KeyedRequest(self.inputs)

    @property
    def stream_key(self) -> tuple[str, str]:
        return (self.target.kind, self.subject_id)


class GroupCommitter:
    """Appends of one process, committed in groups (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        new_ids: Callable[[int], list[str]],
        *,
        max_group: int = 64,
        max_inflight: int = 2,
    ) -> None:
        self._pool = pool
        self._new_ids = new_ids
        self._max_group = max_group
        self._max_inflight = max_inflight
        self._pending: list[_Pending] = []
        self._busy: set[tuple[str, str]] = set()
        self._inflight: set[asyncio.Task[None]] = set()

    async def append(
        self,
        target: AppendTarget[Any],
        subject_id: str,
        inputs: Sequence[EventInput],
        *,
        expected_seq: int | None,
        authorize: Authorize,
    ) -> Outcome:
        """Append checked events to one stream; (receipt, replayed?) once committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(target, subject_id, inputs, expected_seq, authorize, future))
        self._start_groups()
        return await future

    def _start_groups(self) -> None:
        while len(self._inflight) < self._max_inflight:
            group = self._take_group()
            if not group:
                return
            task = asyncio.create_task(self._run_group(group), name="khala-runtime-group-commit")
            self._inflight.add(task)

    def _take_group(self) -> list[_Pending]:
        """The oldest pending appends of distinct, idle streams (the rest stay queued)."""
        group: list[_Pending] = []
        rest: list[_Pending] = []
        for pending in self._pending:
            key = pending.stream_key
            if len(group) < self._max_group and key not in self._busy:
                self._busy.add(key)
                group.append(pending)
            else:
                rest.append(pending)
        self._pending = rest
        return group

    async def _run_group(self, group: list[_Pending]) -> None:
        try:
            live = [p for p in group if not p.future.done()]  # a cancelled request
            if live:
                await self._commit_or_fall_back(live)
        finally:
            for pending in group:
                self._busy.discard(pending.stream_key)
            self._inflight.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._start_groups()

    async def _commit_or_fall_back(self, group: list[_Pending]) -> None:
        try:
            outcomes = await self._commit(group)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != IDEMPOTENCY_KEYS_PK:
                _fail_all(group, exc)
                return
            metrics.KEY_RACE_RETRIES.inc()
            await self._one_by_one(group)
            return
        except Exception as exc:
            _fail_all(group, exc)
            return
        metrics.GROUP_COMMIT_SIZE.observe(len(group))
        for pending, outcome in zip(group, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _commit(self, group: list[_Pending]) -> list[Outcome | DomainError]:
        """Lock, plan and write every member in ONE transaction; outcomes in group order."""
        outcomes: dict[int, Outcome | DomainError] = {}
        ordered = sorted(range(len(group)), key=lambda i: group[i].stream_key)
        async with self._pool.acquire() as conn, conn.transaction():
            for i in ordered:
                outcomes[i] = await self._append_locked(conn, group[i])
        result = [outcomes[i] for i in range(len(group))]
        for pending, outcome in zip(group, result, strict=True):
            count_outcome(outcome, len(pending.inputs))
        return result

    async def _append_locked(
        self, conn: asyncpg.Connection, pending: _Pending
    ) -> Outcome | DomainError:
        target, request = pending.target, pending.request
        locked = await target.lock(conn, pending.subject_id, request.keys)
        if locked is None:
            return target.not_found(pending.subject_id)
        head, now, found_keys = locked
        try:
            pending.authorize(head.org_id)
        except DomainError as exc:
            return exc
        if found_keys:
            found = await event_sql.key_records(conn, head.stream_id, found_keys)
            original = replayed_receipt(request.keys, found, request.hash)
            if original is not None:
                return original, True
        try:
            plan: AppendPlan[Any] = target.plan(
                head,
                pending.inputs,
                expected_seq=pending.expected_seq,
                now_ms=now,
                event_ids=self._new_ids(len(pending.inputs)),
            )
        except DomainError as exc:
            return exc
        await event_sql.write_batch(
            conn,
            plan.events,
            routing_key=target.routing_key(head.org_id),
            now_ms=now,
            head=target.head_write(plan.head),
            keys=request.keys,
            request_hash=request.hash,
        )
        return plan.receipt, False

    async def _one_by_one(self, group: list[_Pending]) -> None:
        """Retry each member alone on the single path (after an idempotency-key race)."""
        for pending in group:
            if pending.future.done():
                continue
            try:
                outcome = await append_to_stream(
                    self._pool,
                    pending.target,
                    pending.subject_id,
                    pending.inputs,
                    expected_seq=pending.expected_seq,
                    authorize=pending.authorize,
                    new_ids=self._new_ids,
                )
            except Exception as exc:
                pending.future.set_exception(exc)
            else:
                pending.future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the groups in flight (new appends are the caller's to stop)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


def _fail_all(group: list[_Pending], exc: BaseException) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)
