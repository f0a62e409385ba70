"""Codex worker use cases: create-or-reattach, append (events, heartbeat, stop,
resume), snapshots and lists with heartbeat freshness and projection status.

Appends take the shared write path (`write_path.py`) inside one transaction
that first locks the worker row: gapless `stream_seq`, hash chain, outbox
rows (routing key `<org>.worker`) and idempotency exactly as for runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from khala_runtime import metrics
from khala_runtime.domain.actor import TRUSTED_SERVICE, Actor
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.heartbeat import HeartbeatView, heartbeat_view
from khala_runtime.domain.ids import worker_routing_key
from khala_runtime.domain.model import CreateWorker, WorkerHead
from khala_runtime.domain.projection import UNKNOWN, Projection
from khala_runtime.domain.worker_append import check_reattach, plan_register, plan_worker_append
from khala_runtime.storage import events as event_sql
from khala_runtime.storage import runs as run_sql
from khala_runtime.storage import workers as worker_sql
from khala_runtime.usecases.event_ids import uuid4_strings
from khala_runtime.usecases.group_commit import GroupCommitter
from khala_runtime.usecases.runs import NoProjector, ProjectionSource
from khala_runtime.usecases.write_path import (
    AppendTarget,
    Authorize,
    allow_all,
    persist_events,
)
from openagents.runtime.v1.events_pb2 import EventInput, Receipt, RuntimeEvent

DEFAULT_STALE_AFTER_MS = 30_000


@dataclass(frozen=True)
class WorkerView:
    """A worker snapshot: head, heartbeat freshness, projection status."""

    head: WorkerHead
    heartbeat: HeartbeatView
    projection: Projection


def worker_not_found(worker_id: str) -> DomainError:
    return DomainError("worker_not_found", f"worker {worker_id!r} does not exist")


_WORKERS = AppendTarget(
    kind="worker",
    lock=worker_sql.lock_workers,
    read=worker_sql.read_workers,
    plan=plan_worker_append,
    heads_write=worker_sql.heads_write,
    routing_key=worker_routing_key,
    not_found=worker_not_found,
)


class WorkerService:
    """Workers over one asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        stale_after_ms: int = DEFAULT_STALE_AFTER_MS,
        projections: ProjectionSource | None = None,
        new_ids: Callable[[int], list[str]] | None = None,
        group_inflight: int = 2,
    ) -> None:
        self._pool = pool
        self._stale_after_ms = stale_after_ms
        self._projections = projections or NoProjector()
        self._new_ids = new_ids or uuid4_strings
        self._committer = GroupCommitter(pool, _WORKERS, self._new_ids, max_inflight=group_inflight)

    @property
    def stale_after_ms(self) -> int:
        """Age past which a heartbeat is stale."""
        return self._stale_after_ms

    async def create_or_reattach(
        self, request: CreateWorker, *, actor: Actor = TRUSTED_SERVICE
    ) -> tuple[WorkerView, bool]:
        """Register a worker (appending `worker.registered` at seq 1, made by `actor`)
        or, if it exists in the same org, return it unchanged; (snapshot, created?)."""
        async with self._pool.acquire() as conn, conn.transaction():
            now = await run_sql.now_ms(conn)
            plan = plan_register(request, now_ms=now, event_id=self._new_ids(1)[0])
            created = await worker_sql.insert_worker(conn, plan.head)
            if created:
                await persist_events(conn, plan, worker_routing_key(request.org_id), now, actor)
                head = plan.head
            else:
                found = await worker_sql.get_worker(conn, request.worker_id)
                if found is None:  # pragma: no cover - workers are never deleted
                    raise DomainError("worker_exists", f"worker {request.worker_id!r} is taken")
                head, now = found
                check_reattach(head, request)
        if created:
            metrics.WORKERS_REGISTERED.inc()
            metrics.EVENTS_APPENDED.inc()
        return (await self._views([head], now))[0], created

    async def append(
        self,
        worker_id: str,
        inputs: Sequence[EventInput],
        *,
        expected_seq: int | None,
        authorize: Authorize = allow_all,
        actor: Actor = TRUSTED_SERVICE,
    ) -> tuple[Receipt, bool]:
        """Append checked events made by `actor` to a worker; (receipt, replayed?)."""
        return await self._committer.append(
            worker_id, inputs, expected_seq=expected_seq, authorize=authorize, actor=actor
        )

    async def get_worker(self, worker_id: str, *, authorize: Authorize = allow_all) -> WorkerHead:
        """A worker's current head."""
        found = await worker_sql.get_worker(self._pool, worker_id)
        if found is None:
            raise worker_not_found(worker_id)
        authorize(found[0].org_id)
        return found[0]

    async def read_events(
        self, worker_id: str, *, after_seq: int, limit: int, authorize: Authorize = allow_all
    ) -> tuple[WorkerHead, list[RuntimeEvent]]:
        """A worker's head and up to `limit` events after `after_seq`, in order."""
        head = await self.get_worker(worker_id, authorize=authorize)
        events = await event_sql.read_events(
            self._pool, head.stream_id, after_seq=after_seq, up_to_seq=head.last_seq, limit=limit
        )
        return head, events

    async def snapshot(self, worker_id: str, *, authorize: Authorize = allow_all) -> WorkerView:
        """A worker's snapshot (heartbeat judged against the database clock)."""
        found = await worker_sql.get_worker(self._pool, worker_id)
        if found is None:
            raise worker_not_found(worker_id)
        head, now = found
        authorize(head.org_id)
        return (await self._views([head], now))[0]

    async def list_workers(
        self, org_id: str, *, limit: int, before: tuple[int, str] | None
    ) -> list[WorkerHead]:
        """An org's worker heads, newest first (keyset-paginated)."""
        heads, _ = await worker_sql.list_workers(self._pool, org_id, limit=limit, before=before)
        return heads

    async def list_snapshots(
        self, org_id: str, *, limit: int, before: tuple[int, str] | None
    ) -> list[WorkerView]:
        """An org's worker snapshots, newest first (keyset-paginated)."""
        heads, now = await worker_sql.list_workers(self._pool, org_id, limit=limit, before=before)
        return await self._views(heads, now)

    async def _views(self, heads: Sequence[WorkerHead], now_ms: int) -> list[WorkerView]:
        statuses = await self._projections.statuses([(h.stream_id, h.last_seq) for h in heads])
        return [
            WorkerView(
                head,
                heartbeat_view(head.last_heartbeat_at_ms, now_ms, self._stale_after_ms),
                statuses.get(head.stream_id, UNKNOWN),
            )
            for head in heads
        ]
