"""Planning worker registration and worker appends (pure).

Same rules as runs (`plan_batch` in `append.py`): `expected_seq`, the worker
state machine applied in order, gapless `stream_seq`, the hash chain. A batch's
`worker.heartbeat` events move the head's `last_heartbeat_at_ms` to their
commit time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from khala_runtime.domain.append import AppendPlan, StreamRef, plan_batch
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.ids import worker_stream_id
from khala_runtime.domain.model import CreateWorker, WorkerHead
from khala_runtime.domain.worker_state import (
    WORKER_HEARTBEAT,
    WORKER_REGISTERED,
    worker_transition,
)
from openagents.runtime.v1.events_pb2 import STREAM_KIND_WORKER, EventInput


def _ref(org_id: str, worker_id: str) -> StreamRef:
    return StreamRef(STREAM_KIND_WORKER, worker_stream_id(worker_id), worker_id, org_id)


def plan_register(request: CreateWorker, *, now_ms: int, event_id: str) -> AppendPlan[WorkerHead]:
    """A new worker's head and its `worker.registered` event at stream_seq 1."""
    batch = plan_batch(
        _ref(request.org_id, request.worker_id),
        None,
        [EventInput(type=WORKER_REGISTERED, payload_json=b"{}")],
        transition=worker_transition,
        expected_seq=None,
        now_ms=now_ms,
        event_ids=[event_id],
    )
    head = WorkerHead(
        worker_id=request.worker_id,
        org_id=request.org_id,
        status=batch.status,
        last_seq=batch.last_seq,
        chain_hash=batch.chain_hash,
        last_heartbeat_at_ms=None,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )
    return batch.plan(head)


def plan_worker_append(
    head: WorkerHead,
    inputs: Sequence[EventInput],
    *,
    expected_seq: int | None,
    now_ms: int,
    event_ids: Sequence[str],
) -> AppendPlan[WorkerHead]:
    """Check and sequence `inputs` on top of a worker's `head` (DomainError if refused)."""
    batch = plan_batch(
        _ref(head.org_id, head.worker_id),
        head,
        inputs,
        transition=worker_transition,
        expected_seq=expected_seq,
        now_ms=now_ms,
        event_ids=event_ids,
    )
    beat = any(item.type == WORKER_HEARTBEAT for item in inputs)
    return batch.plan(
        replace(
            head,
            status=batch.status,
            last_seq=batch.last_seq,
            chain_hash=batch.chain_hash,
            last_heartbeat_at_ms=batch.occurred_at_ms if beat else head.last_heartbeat_at_ms,
            updated_at_ms=batch.occurred_at_ms,
        )
    )


def check_reattach(existing: WorkerHead, request: CreateWorker) -> None:
    """Allow reattaching to a worker of the same org, else `worker_exists`."""
    if existing.org_id != request.org_id:
        raise DomainError("worker_exists", f"worker id {request.worker_id!r} is taken")
