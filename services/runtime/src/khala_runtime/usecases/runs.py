"""Run use cases (create, append, read), shared by the HTTP and gRPC edges.

An append takes the shared write path (`write_path.py`) inside one
transaction that first locks the run row, so events of one run are appended
strictly one batch after another, with gapless `stream_seq`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.actor import TRUSTED_SERVICE, Actor
from khala_runtime.domain.append import check_repeat_create, plan_append, plan_create
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.ids import parse_stream_id, run_routing_key
from khala_runtime.domain.model import CreateRun, RunHead
from khala_runtime.domain.projection import UNKNOWN, Projection
from khala_runtime.storage import events as event_sql
from khala_runtime.storage import runs as run_sql
from khala_runtime.storage import streams as stream_sql
from khala_runtime.storage import workers as worker_sql
from khala_runtime.usecases.event_ids import uuid4_strings
from khala_runtime.usecases.group_commit import GroupCommitter
from khala_runtime.usecases.write_path import (
    AppendTarget,
    Authorize,
    allow_all,
    persist_events,
)
from openagents.runtime.v1.events_pb2 import EventInput, Receipt, RuntimeEvent

READ_PAGE = 500


class ProjectionSource(Protocol):
    """Where projection statuses come from (the projector client, or nothing)."""

    async def statuses(self, heads: Sequence[tuple[str, int]]) -> dict[str, Projection]: ...


class NoProjector:
    """A projection source that knows nothing: every stream is `unknown`."""

    async def statuses(self, heads: Sequence[tuple[str, int]]) -> dict[str, Projection]:
        """`unknown` for every stream."""
        return {stream_id: UNKNOWN for stream_id, _ in heads}


@dataclass(frozen=True)
class RunView:
    """A run snapshot: its head and its projection status."""

    head: RunHead
    projection: Projection


def run_not_found(run_id: str) -> DomainError:
    return DomainError("run_not_found", f"run {run_id!r} does not exist")


_RUNS = AppendTarget(
    kind="run",
    lock=run_sql.lock_runs,
    read=run_sql.read_runs,
    plan=plan_append,
    heads_write=run_sql.heads_write,
    routing_key=run_routing_key,
    not_found=run_not_found,
)


class RunService:
    """Creates runs, appends events and reads the log, over one asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        new_ids: Callable[[int], list[str]] | None = None,
        projections: ProjectionSource | None = None,
        group_inflight: int = 2,
    ) -> None:
        self._pool = pool
        self._new_ids = new_ids or uuid4_strings
        self._committer = GroupCommitter(pool, _RUNS, self._new_ids, max_inflight=group_inflight)
        self._projections = projections or NoProjector()

    @property
    def pool(self) -> asyncpg.Pool:
        """The runtime schema's pool."""
        return self._pool

    async def create_run(
        self, request: CreateRun, *, actor: Actor = TRUSTED_SERVICE
    ) -> tuple[RunHead, bool]:
        """Create a run with its `run.created` event made by `actor`; (head, created?)."""
        async with self._pool.acquire() as conn, conn.transaction():
            now = await run_sql.now_ms(conn)
            plan = plan_create(request, now_ms=now, event_id=self._new_ids(1)[0])
            if not await run_sql.insert_run(conn, plan.head):
                existing = await run_sql.get_run(conn, request.run_id)
                if existing is None:  # pragma: no cover - runs are never deleted
                    raise DomainError("run_exists", f"run id {request.run_id!r} is taken")
                check_repeat_create(existing, request)
                return existing, False
            await persist_events(conn, plan, run_routing_key(request.org_id), now, actor)
        metrics.RUNS_CREATED.inc()
        metrics.EVENTS_APPENDED.inc()
        return plan.head, True

    async def append(
        self,
        run_id: str,
        inputs: Sequence[EventInput],
        *,
        expected_seq: int | None,
        authorize: Authorize = allow_all,
        actor: Actor = TRUSTED_SERVICE,
    ) -> tuple[Receipt, bool]:
        """Append checked events made by `actor` to a run; (receipt, replayed?)."""
        return await self._committer.append(
            run_id, inputs, expected_seq=expected_seq, authorize=authorize, actor=actor
        )

    async def get_run(self, run_id: str, *, authorize: Authorize = allow_all) -> RunHead:
        """A run's current head."""
        head = await run_sql.get_run(self._pool, run_id)
        if head is None:
            raise run_not_found(run_id)
        authorize(head.org_id)
        return head

    async def snapshot(self, run_id: str, *, authorize: Authorize = allow_all) -> RunView:
        """A run's head with its projection status."""
        return await self.view_of(await self.get_run(run_id, authorize=authorize))

    async def view_of(self, head: RunHead) -> RunView:
        """A run head with its projection status."""
        statuses = await self._projections.statuses([(head.stream_id, head.last_seq)])
        return RunView(head, statuses.get(head.stream_id, UNKNOWN))

    async def list_runs(
        self, org_id: str, *, limit: int, before: tuple[int, str] | None
    ) -> list[RunHead]:
        """An org's runs, newest first (keyset-paginated)."""
        return await run_sql.list_runs(self._pool, org_id, limit=limit, before=before)

    async def list_snapshots(
        self, org_id: str, *, limit: int, before: tuple[int, str] | None
    ) -> list[RunView]:
        """An org's runs with their projection status, newest first."""
        heads = await self.list_runs(org_id, limit=limit, before=before)
        statuses = await self._projections.statuses([(h.stream_id, h.last_seq) for h in heads])
        return [RunView(h, statuses.get(h.stream_id, UNKNOWN)) for h in heads]

    async def read_events(
        self, run_id: str, *, after_seq: int, limit: int, authorize: Authorize = allow_all
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
        """Events of a run or worker stream with after_seq < seq <= up_to_seq
        (0: the head when called), in order."""
        head_seq = await self._head_seq(stream_id)
        # The log below the head is immutable, so paging up to a fixed bound is consistent.
        bound = head_seq if up_to_seq == 0 else min(up_to_seq, head_seq)
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

    async def list_streams(
        self, *, org_id: str | None, kinds: tuple[str, ...], after: str, limit: int
    ) -> list[stream_sql.StreamListing]:
        """Up to `limit` streams of `kinds` (run, worker; optionally one org) with
        stream_id > `after`, in stream_id order."""
        return await stream_sql.list_streams(
            self._pool, org_id=org_id, kinds=kinds, after=after, limit=limit
        )

    async def _head_seq(self, stream_id: str) -> int:
        parsed = parse_stream_id(stream_id)
        if parsed is None:
            raise DomainError(
                "validation_error", f"stream_id: malformed {stream_id!r}", field="stream_id"
            )
        kind, subject = parsed
        if kind == "run":
            return (await self.get_run(subject)).last_seq
        worker = await worker_sql.get_worker(self._pool, subject)
        if worker is None:
            raise DomainError("stream_not_found", f"stream {stream_id!r} does not exist")
        return worker[0].last_seq
