"""Planning an append: the pure core of runtime's write path.

Given a run's locked head, a plan checks `expected_seq`, runs every event
through the state machine in order, assigns gapless `stream_seq` from
`last_seq + 1`, links each event into the hash chain and produces the new head
and the receipt. The caller persists the plan in the same transaction that
locked the head, so a plan is never applied to a head that moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from khala_runtime.domain.canonical import canonical_json
from khala_runtime.domain.chain import GENESIS, event_content, link
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.ids import run_stream_id
from khala_runtime.domain.model import CreateRun, RunHead
from khala_runtime.domain.run_state import RUN_CREATED, RunStatus, transition
from openagents.runtime.v1.events_pb2 import (
    STREAM_KIND_RUN,
    EventInput,
    Receipt,
    RuntimeEvent,
)


@dataclass(frozen=True)
class AppendPlan:
    """Events to insert, the run head after them, and the receipt to return."""

    head: RunHead
    events: tuple[RuntimeEvent, ...]
    receipt: Receipt


def plan_create(request: CreateRun, *, now_ms: int, event_id: str) -> AppendPlan:
    """The new run's head and its `run.created` event at stream_seq 1."""
    created = EventInput(type=RUN_CREATED, payload_json=canonical_json({"title": request.title}))
    events, status, chain = _link_events(
        org_id=request.org_id,
        run_id=request.run_id,
        status=None,
        last_seq=0,
        prev_hash=GENESIS,
        inputs=[created],
        occurred_at_ms=now_ms,
        event_ids=[event_id],
    )
    head = RunHead(
        run_id=request.run_id,
        org_id=request.org_id,
        title=request.title,
        status=status,
        last_seq=1,
        chain_hash=chain,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )
    return AppendPlan(head, events, _receipt(head.stream_id, events))


def plan_append(
    head: RunHead,
    inputs: Sequence[EventInput],
    *,
    expected_seq: int | None,
    now_ms: int,
    event_ids: Sequence[str],
) -> AppendPlan:
    """Check and sequence `inputs` on top of `head` (DomainError if refused)."""
    if expected_seq is not None and expected_seq != head.last_seq:
        raise DomainError(
            "seq_conflict",
            f"expected_seq {expected_seq} but the run is at {head.last_seq}",
            current_seq=head.last_seq,
        )
    if not inputs:
        raise DomainError("validation_error", "events: must not be empty", field="events")
    # The commit clock never runs backwards within a stream, even across replicas.
    occurred_at_ms = max(now_ms, head.updated_at_ms)
    events, status, chain = _link_events(
        org_id=head.org_id,
        run_id=head.run_id,
        status=head.status,
        last_seq=head.last_seq,
        prev_hash=head.chain_hash,
        inputs=inputs,
        occurred_at_ms=occurred_at_ms,
        event_ids=event_ids,
    )
    new_head = replace(
        head,
        status=status,
        last_seq=head.last_seq + len(events),
        chain_hash=chain,
        updated_at_ms=occurred_at_ms,
    )
    return AppendPlan(new_head, events, _receipt(head.stream_id, events))


def _link_events(
    *,
    org_id: str,
    run_id: str,
    status: RunStatus | None,
    last_seq: int,
    prev_hash: str,
    inputs: Sequence[EventInput],
    occurred_at_ms: int,
    event_ids: Sequence[str],
) -> tuple[tuple[RuntimeEvent, ...], RunStatus, str]:
    if len(event_ids) != len(inputs):
        raise ValueError("one event id is needed per input")
    stream_id = run_stream_id(run_id)
    events: list[RuntimeEvent] = []
    for offset, (item, event_id) in enumerate(zip(inputs, event_ids, strict=True), start=1):
        status = transition(status, item.type)
        event = RuntimeEvent(
            event_id=event_id,
            stream_id=stream_id,
            org_id=org_id,
            stream_kind=STREAM_KIND_RUN,
            subject_id=run_id,
            stream_seq=last_seq + offset,
            type=item.type,
            payload_json=item.payload_json or b"{}",
            idempotency_key=item.idempotency_key,
            occurred_at_ms=occurred_at_ms,
        )
        prev_hash = link(prev_hash, event_content(event))
        event.chain_hash = prev_hash
        events.append(event)
    assert status is not None
    return tuple(events), status, prev_hash


def _receipt(stream_id: str, events: Sequence[RuntimeEvent]) -> Receipt:
    return Receipt(
        stream_id=stream_id,
        first_seq=events[0].stream_seq,
        last_seq=events[-1].stream_seq,
        event_ids=[event.event_id for event in events],
        chain_hash=events[-1].chain_hash,
    )


def check_repeat_create(existing: RunHead, request: CreateRun) -> None:
    """Allow a repeated create of the same run (same org and title), else `run_exists`."""
    if existing.org_id != request.org_id:
        raise DomainError("run_exists", f"run id {request.run_id!r} is taken")
    if existing.title != request.title:
        raise DomainError(
            "run_exists", f"run {request.run_id!r} already exists with a different title"
        )
