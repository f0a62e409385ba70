"""Runtime's command and query use cases, shared by the HTTP and gRPC edges.

An append runs in ONE transaction: lock the run row, authorize, resolve
idempotency keys, plan (expected_seq, state machine, gapless seq, hash chain),
insert events and outbox rows, advance the head, NOTIFY the relay, commit.
Once `append` returns, the events and their outbox rows are durable together,
so an accepted event is never lost and is always eventually published.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.append import AppendPlan, check_repeat_create, plan_append, plan_create
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.idempotency import replayed_receipt, request_hash, request_keys
from khala_runtime.domain.ids import parse_stream_id, run_routing_key
from khala_runtime.domain.model import CreateRun, RunHead
from khala_runtime.storage import events as event_sql
from khala_runtime.storage import runs as run_sql
from openagents.runtime.v1.events_pb2 import EventInput, Receipt, RuntimeEvent

Authorize = Callable[[str], None]
READ_PAGE = 500


def _allow(_: str) -> None:
    return None


def _not_found(run_id: str) -> DomainError:
    return DomainError("run_not_found", f"run {run_id!r} does not exist")


class RunService:
    """Creates runs, appends events and reads the log, over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, new_id: Callable[[], str] | None = None) -> None:
        self._pool = pool
        self._new_id = new_id or (lambda: str(uuid.uuid4()))

    async def create_run(self, request: CreateRun) -> tuple[RunHead, bool]:
        """Create a run with its `run.created` event; (head, created?)."""
        async with self._pool.acquire() as conn, conn.transaction():
            now = await run_sql.now_ms(conn)
            plan = plan_create(request, now_ms=now, event_id=self._new_id())
            if not await run_sql.insert_run(conn, plan.head):
                existing = await run_sql.get_run(conn, request.run_id)
                if existing is None:  # pragma: no cover - runs are never deleted
                    raise DomainError("run_exists", f"run id {request.run_id!r} is taken")
                check_repeat_create(existing, request)
                return existing, False
            await self._persist_events(conn, plan, now)
        metrics.RUNS_CREATED.inc()
        metrics.EVENTS_APPENDED.inc()
        return plan.head, True

    async def append(
        self,
        run_id: str,
        inputs: Sequence[EventInput],
        *,
        expected_seq: int | None,
        authorize: Authorize = _allow,
    ) -> tuple[Receipt, bool]:
        """Append checked events to a run; (receipt, replayed?)."""
        try:
            receipt, replayed = await self._append(run_id, inputs, expected_seq, authorize)
        except DomainError as exc:
            metrics.APPENDS.labels(exc.code).inc()
            raise
        metrics.APPENDS.labels("replayed" if replayed else "appended").inc()
        if not replayed:
            metrics.EVENTS_APPENDED.inc(len(inputs))
        return receipt, replayed

    async def _append(
        self,
        run_id: str,
        inputs: Sequence[EventInput],
        expected_seq: int | None,
        authorize: Authorize,
    ) -> tuple[Receipt, bool]:
        keys = request_keys(inputs)
        req_hash = request_hash(inputs) if keys else ""
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await run_sql.lock_run(conn, run_id)
            if locked is None:
                raise _not_found(run_id)
            head, now = locked
            authorize(head.org_id)
            if keys:
                found = await event_sql.find_keys(conn, head.stream_id, keys)
                original = replayed_receipt(keys, found, req_hash)
                if original is not None:
                    return original, True
            plan = plan_append(
                head,
                inputs,
                expected_seq=expected_seq,
                now_ms=now,
                event_ids=[self._new_id() for _ in inputs],
            )
            await self._persist_events(conn, plan, now)
            await run_sql.update_head(conn, plan.head)
            if keys:
                await event_sql.insert_keys(
                    conn, head.stream_id, keys, req_hash, plan.receipt, now
                )
        return plan.receipt, False

    @staticmethod
    async def _persist_events(conn: asyncpg.Connection, plan: AppendPlan, now: int) -> None:
        await event_sql.insert_events(conn, plan.events)
        await event_sql.insert_outbox(conn, plan.events, run_routing_key(plan.head.org_id), now)

    async def get_run(self, run_id: str, *, authorize: Authorize = _allow) -> RunHead:
        """A run's current head."""
        head = await run_sql.get_run(self._pool, run_id)
        if head is None:
            raise _not_found(run_id)
        authorize(head.org_id)
        return head

    async def list_runs(
        self, org_id: str, *, limit: int, before: tuple[int, str] | None
    ) -> list[RunHead]:
        """An org's runs, newest first (keyset-paginated)."""
        return await run_sql.list_runs(self._pool, org_id, limit=limit, before=before)

    async def read_events(
        self, run_id: str, *, after_seq: int, limit: int, authorize: Authorize = _allow
    ) -> tuple[RunHead, list[RuntimeEvent]]:
        """A run's head and up to `limit` events after `after_seq`, in order."""
        head = await self.get_run(run_id, authorize=authorize)
        events = await event_sql.read_events(
            self._pool, head.stream_id, after_seq=after_seq, up_to_seq=head.last_seq, limit=limit
        )
        return head, events

    async def stream(
        self, stream_id: str, *, after_seq: int, up_to_seq: int
    ) -> AsyncIterator[RuntimeEvent]:
        """Events with after_seq < seq <= up_to_seq (0: the head when called), in order."""
        parsed = parse_stream_id(stream_id)
        if parsed is None:
            raise DomainError("validation_error", f"stream_id: malformed {stream_id!r}",
                              field="stream_id")
        kind, subject = parsed
        if kind != "run":
            raise DomainError("stream_not_found", f"stream {stream_id!r} does not exist")
        head = await self.get_run(subject)
        # The log below the head is immutable, so paging up to a fixed bound is consistent.
        bound = head.last_seq if up_to_seq == 0 else min(up_to_seq, head.last_seq)
        cursor = after_seq
        while cursor < bound:
            page = await event_sql.read_events(
                self._pool, stream_id, after_seq=cursor, up_to_seq=bound, limit=READ_PAGE
            )
            if not page:
                return
            for event in page:
                yield event
            cursor = page[-1].stream_seq
