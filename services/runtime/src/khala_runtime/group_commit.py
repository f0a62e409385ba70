"""Group commit: concurrent appends to distinct streams share one transaction.

Guarantees (DESIGN invariant 7 and §4.1 hold per append, exactly as on the
single path; both run `write_path.commit_appends`):
- Durable before answered: an append's future resolves only after the group's
  COMMIT returned. A failed group answers every member with the error; nothing
  of it was committed (the transaction is all-or-nothing).
- Per-append isolation of domain outcomes: a refused member (not found,
  forbidden, 409) writes nothing and gets its error; the others commit.
- One member per stream per group, and a stream with a group in flight waits
  for the next group: appends to one stream are still planned and committed
  strictly one after another, in arrival order.
- No deadlock: a group locks its head rows in one statement in id order, the
  order every group and the single path follow.
- Idempotency races: if the write hits another process's just-committed
  idempotency key, the whole group rolls back with nothing written and each
  member is retried alone (`append_to_stream`), which re-reads the keys. Any
  other failure is answered, never retried here, because after a lost
  connection the commit's outcome is unknown.

Batching costs no latency when idle: a group starts at once while fewer than
`max_inflight` groups run; under load, appends that arrive while groups are in
flight form the next group, so BEGIN/COMMIT, the WAL flush, a pool checkout
and the lock and write statements are shared by every append in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.errors import DomainError
from khala_runtime.write_path import (
    IDEMPOTENCY_KEYS_PK,
    Append,
    AppendTarget,
    Authorize,
    Outcome,
    append_to_stream,
    commit_appends,
    count_outcome,
)
from openagents.runtime.v1.events_pb2 import EventInput


@dataclass(eq=False)
class _Pending:
    append: Append
    future: asyncio.Future[Outcome]


class GroupCommitter:
    """Appends to one kind of stream, committed in groups (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        target: AppendTarget[Any],
        new_ids: Callable[[int], list[str]],
        *,
        max_group: int = 64,
        max_inflight: int = 2,
    ) -> None:
        self._pool = pool
        self._target = target
        self._new_ids = new_ids
        self._max_group = max_group
        self._max_inflight = max_inflight
        self._pending: list[_Pending] = []
        self._busy: set[str] = set()  # subject ids with a group in flight
        self._inflight: set[asyncio.Task[None]] = set()

    async def append(
        self,
        subject_id: str,
        inputs: Sequence[EventInput],
        *,
        expected_seq: int | None,
        authorize: Authorize,
    ) -> Outcome:
        """Append checked events to one stream; (receipt, replayed?) once committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(Append(subject_id, inputs, expected_seq, authorize), future))
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
            subject = pending.append.subject_id
            if len(group) < self._max_group and subject not in self._busy:
                self._busy.add(subject)
                group.append(pending)
            else:
                rest.append(pending)
        self._pending = rest
        return group

    async def _run_group(self, group: list[_Pending]) -> None:
        try:
            live = [p for p in group if not p.future.done()]  # skip cancelled requests
            if live:
                await self._commit_or_fall_back(live)
        finally:
            for pending in group:
                self._busy.discard(pending.append.subject_id)
            self._inflight.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._start_groups()

    async def _commit_or_fall_back(self, group: list[_Pending]) -> None:
        appends = [p.append for p in group]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                outcomes = await commit_appends(conn, self._target, appends, self._new_ids)
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
            count_outcome(outcome, len(pending.append.inputs))
            if pending.future.done():
                continue
            if isinstance(outcome, DomainError):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _one_by_one(self, group: list[_Pending]) -> None:
        """Retry each member alone on the single path (after an idempotency-key race)."""
        for pending in group:
            try:
                outcome = await append_to_stream(
                    self._pool, self._target, pending.append, self._new_ids
                )
            except Exception as exc:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            else:
                if not pending.future.done():
                    pending.future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the groups in flight (new appends are the caller's to stop)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


def _fail_all(group: list[_Pending], exc: BaseException) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)
