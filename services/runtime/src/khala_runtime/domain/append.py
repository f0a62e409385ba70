"""Planning an append: the pure core of runtime's write path.

Given a stream's locked head, a plan checks `expected_seq`, runs every event
through the stream's state machine in order, assigns gapless `stream_seq` from
`last_seq + 1`, links each event into the hash chain and produces the new head
and the receipt. The caller persists the plan in the same transaction that
locked the head, so a plan is never applied to a head that moved.

`plan_batch` is that core for every kind of stream, given the kind's state
machine; the run plans follow it here, the worker plans are in `worker_append.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from khala_runtime.domain.canonical import canonical_json, canonical_string
from khala_runtime.domain.chain import GENESIS, link
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.ids import run_stream_id
from khala_runtime.domain.model import CreateRun, RunHead
from khala_runtime.domain.run_state import RUN_CREATED, transition
from openagents.runtime.v1.events_pb2 import (
    STREAM_KIND_RUN,
    EventInput,
    Receipt,
    RuntimeEvent,
    StreamKind,
)

H = TypeVar("H")
S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)


@dataclass(frozen=True)
class AppendPlan(Generic[H]):
    """Events to insert, the stream head after them, and the receipt to return."""

    head: H
    events: tuple[RuntimeEvent, ...]
    receipt: Receipt


@dataclass(frozen=True)
class StreamRef:
    """Which stream events are linked into."""

    kind: StreamKind
    stream_id: str
    subject_id: str
    org_id: str


def check_expected_seq(expected_seq: int | None, last_seq: int) -> None:
    """Raise `seq_conflict` (with `current_seq`) unless expected_seq is None or the head."""
    if expected_seq is not None and expected_seq != last_seq:
        raise DomainError(
            "seq_conflict",
            f"expected_seq {expected_seq} but the stream is at {last_seq}",
            current_seq=last_seq,
        )


def link_events(
    stream: StreamRef,
    *,
    last_seq: int,
    prev_hash: str,
    inputs: Sequence[EventInput],
    occurred_at_ms: int,
    event_ids: Sequence[str],
) -> tuple[RuntimeEvent, ...]:
    """Sequence `inputs` after `last_seq` and chain them after `prev_hash`."""
    if len(event_ids) != len(inputs):
        raise ValueError("one event id is needed per input")
    # The content of each link (chain.event_content), with the parts shared by
    # the batch encoded once: this loop runs for every appended event.
    org = canonical_string(stream.org_id)
    sid = canonical_string(stream.stream_id)
    occurred = b"%d" % occurred_at_ms
    types: dict[str, bytes] = {}
    events: list[RuntimeEvent] = []
    for offset, (item, event_id) in enumerate(zip(inputs, event_ids, strict=True), start=1):
        seq = last_seq + offset
        payload = item.payload_json or b"{}"
        encoded_type = types.get(item.type)
        if encoded_type is None:
            encoded_type = types[item.type] = canonical_string(item.type)
        content = b"".join(
            (
                b'{"event_id":',
                canonical_string(event_id),
                b',"idempotency_key":',
                canonical_string(item.idempotency_key),
                b',"occurred_at_ms":',
                occurred,
                b',"org_id":',
                org,
                b',"payload":',
                payload,
                b',"stream_id":',
                sid,
                b',"stream_seq":',
                b"%d" % seq,
                b',"type":',
                encoded_type,
                b"}",
            )
        )
        prev_hash = link(prev_hash, content)
        events.append(
            RuntimeEvent(
                event_id=event_id,
                stream_id=stream.stream_id,
                org_id=stream.org_id,
                stream_kind=stream.kind,
                subject_id=stream.subject_id,
                stream_seq=seq,
                type=item.type,
                payload_json=payload,
                idempotency_key=item.idempotency_key,
                occurred_at_ms=occurred_at_ms,
                chain_hash=prev_hash,
            )
        )
    return tuple(events)


def receipt_of(stream_id: str, events: Sequence[RuntimeEvent]) -> Receipt:
    """The receipt of an accepted batch."""
    return Receipt(
        stream_id=stream_id,
        first_seq=events[0].stream_seq,
        last_seq=events[-1].stream_seq,
        event_ids=[event.event_id for event in events],
        chain_hash=events[-1].chain_hash,
    )


class StreamHead(Protocol[S_co]):
    """What planning an append reads from any stream's locked head."""

    @property
    def org_id(self) -> str: ...

    @property
    def stream_id(self) -> str: ...

    @property
    def status(self) -> S_co: ...

    @property
    def last_seq(self) -> int: ...

    @property
    def chain_hash(self) -> str: ...

    @property
    def updated_at_ms(self) -> int: ...


@dataclass(frozen=True)
class Batch(Generic[S]):
    """An accepted batch: the stream's status after it, its events, their commit time."""

    stream_id: str
    status: S
    events: tuple[RuntimeEvent, ...]
    occurred_at_ms: int

    @property
    def last_seq(self) -> int:
        """The stream_seq of the batch's last event: the new head's `last_seq`."""
        return self.events[-1].stream_seq

    @property
    def chain_hash(self) -> str:
        """The chain hash of the batch's last event: the new head's `chain_hash`."""
        return self.events[-1].chain_hash

    def plan(self, head: H) -> AppendPlan[H]:
        """The plan that writes this batch and moves the stream to `head`."""
        return AppendPlan(head, self.events, receipt_of(self.stream_id, self.events))


def plan_batch(
    stream: StreamRef,
    head: StreamHead[S] | None,
    inputs: Sequence[EventInput],
    *,
    transition: Callable[[S | None, str], S],
    expected_seq: int | None,
    now_ms: int,
    event_ids: Sequence[str],
) -> Batch[S]:
    """Check `inputs` against a stream's locked `head` (None: a stream being created),
    run them through the stream's state machine `transition` in order and chain them
    after the head (DomainError if refused)."""
    last_seq = 0 if head is None else head.last_seq
    check_expected_seq(expected_seq, last_seq)
    if not inputs:
        raise DomainError("validation_error", "events: must not be empty", field="events")
    status = transition(None if head is None else head.status, inputs[0].type)
    for item in inputs[1:]:
        status = transition(status, item.type)
    # The commit clock never runs backwards within a stream, even across replicas.
    occurred_at_ms = now_ms if head is None else max(now_ms, head.updated_at_ms)
    events = link_events(
        stream,
        last_seq=last_seq,
        prev_hash=GENESIS if head is None else head.chain_hash,
        inputs=inputs,
        occurred_at_ms=occurred_at_ms,
        event_ids=event_ids,
    )
    return Batch(stream.stream_id, status, events, occurred_at_ms)


def _run_ref(org_id: str, run_id: str) -> StreamRef:
    return StreamRef(STREAM_KIND_RUN, run_stream_id(run_id), run_id, org_id)


def plan_create(request: CreateRun, *, now_ms: int, event_id: str) -> AppendPlan[RunHead]:
    """The new run's head and its `run.created` event at stream_seq 1."""
    created = EventInput(type=RUN_CREATED, payload_json=canonical_json({"title": request.title}))
    batch = plan_batch(
        _run_ref(request.org_id, request.run_id),
        None,
        [created],
        transition=transition,
        expected_seq=None,
        now_ms=now_ms,
        event_ids=[event_id],
    )
    head = RunHead(
        run_id=request.run_id,
        org_id=request.org_id,
        title=request.title,
        status=batch.status,
        last_seq=batch.last_seq,
        chain_hash=batch.chain_hash,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )
    return batch.plan(head)


def plan_append(
    head: RunHead,
    inputs: Sequence[EventInput],
    *,
    expected_seq: int | None,
    now_ms: int,
    event_ids: Sequence[str],
) -> AppendPlan[RunHead]:
    """Check and sequence `inputs` on top of a run's `head` (DomainError if refused)."""
    batch = plan_batch(
        _run_ref(head.org_id, head.run_id),
        head,
        inputs,
        transition=transition,
        expected_seq=expected_seq,
        now_ms=now_ms,
        event_ids=event_ids,
    )
    return batch.plan(
        replace(
            head,
            status=batch.status,
            last_seq=batch.last_seq,
            chain_hash=batch.chain_hash,
            updated_at_ms=batch.occurred_at_ms,
        )
    )


def check_repeat_create(existing: RunHead, request: CreateRun) -> None:
    """Allow a repeated create of the same run (same org and title), else `run_exists`."""
    if existing.org_id != request.org_id:
        raise DomainError("run_exists", f"run id {request.run_id!r} is taken")
    if existing.title != request.title:
        raise DomainError(
            "run_exists", f"run {request.run_id!r} already exists with a different title"
        )
