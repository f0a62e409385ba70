"""Unit: the worker state machine, worker append plans, heartbeat freshness,
projection status and worker request validation."""

from __future__ import annotations

import json
import uuid

import pytest

from khala_runtime.domain.chain import verify_chain
from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.heartbeat import HeartbeatState, heartbeat_view
from khala_runtime.domain.model import CreateWorker
from khala_runtime.domain.projection import ProjectionState, projection_of
from khala_runtime.domain.worker_append import check_reattach, plan_register, plan_worker_append
from khala_runtime.domain.worker_state import WorkerStatus, worker_transition
from khala_runtime.handlers.schemas import (
    parse_command,
    parse_create_worker,
    parse_worker_append,
)
from khala_runtime.usecases.event_ids import uuid4_strings
from openagents.runtime.v1.events_pb2 import STREAM_KIND_WORKER, EventInput

NOW = 1_700_000_000_000
S = WorkerStatus


def ids(n: int, start: int = 0) -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(start, start + n)]


def ev(type_: str, **payload: object) -> EventInput:
    return EventInput(type=type_, payload_json=json.dumps(payload, sort_keys=True).encode())


@pytest.mark.parametrize(
    ("status", "event_type", "after"),
    [
        (None, "worker.registered", S.REGISTERED),
        (S.REGISTERED, "worker.started", S.RUNNING),
        (S.RUNNING, "worker.started", S.RUNNING),
        (S.ERROR, "worker.started", S.RUNNING),
        (S.RUNNING, "worker.error", S.ERROR),
        (S.REGISTERED, "worker.stopped", S.STOPPED),
        (S.ERROR, "worker.stopped", S.STOPPED),
        (S.STOPPED, "worker.resumed", S.RUNNING),
        (S.RUNNING, "worker.heartbeat", S.RUNNING),
        (S.ERROR, "worker.event", S.ERROR),
        (S.REGISTERED, "worker.request.received", S.REGISTERED),
    ],
)
def test_allowed_transitions(
    status: WorkerStatus | None, event_type: str, after: WorkerStatus
) -> None:
    assert worker_transition(status, event_type) is after


@pytest.mark.parametrize(
    "event_type",
    [
        "worker.heartbeat",
        "worker.event",
        "worker.started",
        "worker.stopped",
        "worker.error",
        "worker.request.received",
        "worker.registered",
    ],
)
def test_stopped_worker_refuses_everything_but_resume(event_type: str) -> None:
    with pytest.raises(DomainError) as info:
        worker_transition(S.STOPPED, event_type)
    assert info.value.code == "worker_stopped"
    assert info.value.details["worker_status"] == "stopped"


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        (S.RUNNING, "worker.resumed"),
        (S.REGISTERED, "worker.resumed"),
        (S.RUNNING, "worker.registered"),
        (None, "worker.started"),
    ],
)
def test_invalid_transitions(status: WorkerStatus | None, event_type: str) -> None:
    with pytest.raises(DomainError) as info:
        worker_transition(status, event_type)
    assert info.value.code == "invalid_transition"


def test_unknown_type() -> None:
    with pytest.raises(DomainError) as info:
        worker_transition(S.RUNNING, "run.started")
    assert info.value.code == "unknown_event_type"


def test_register_then_append_is_gapless_chained_and_tracks_heartbeats() -> None:
    first = plan_register(CreateWorker("acme", "w1"), now_ms=NOW, event_id=ids(1)[0])
    (registered,) = first.events
    assert (registered.stream_id, registered.stream_seq, registered.type) == (
        "worker:w1",
        1,
        "worker.registered",
    )
    assert registered.stream_kind == STREAM_KIND_WORKER and registered.subject_id == "w1"
    assert first.head.status is S.REGISTERED and first.head.last_heartbeat_at_ms is None

    second = plan_worker_append(
        first.head,
        [ev("worker.started"), ev("worker.heartbeat"), ev("worker.event", k=1)],
        expected_seq=1,
        now_ms=NOW + 10,
        event_ids=ids(3, 1),
    )
    assert [e.stream_seq for e in second.events] == [2, 3, 4]
    assert second.head.status is S.RUNNING and second.head.last_seq == 4
    assert second.head.last_heartbeat_at_ms == NOW + 10
    assert verify_chain([*first.events, *second.events])
    assert (second.receipt.first_seq, second.receipt.last_seq) == (2, 4)

    # A clock that went backwards is clamped; heartbeat time stays put without a beat.
    third = plan_worker_append(
        second.head,
        [ev("worker.error", error="boom")],
        expected_seq=None,
        now_ms=NOW,
        event_ids=ids(1, 4),
    )
    assert third.head.status is S.ERROR
    assert third.head.last_heartbeat_at_ms == NOW + 10
    assert third.events[0].occurred_at_ms == NOW + 10


def test_worker_seq_conflict_and_stopped_batch() -> None:
    head = plan_register(CreateWorker("acme", "w1"), now_ms=NOW, event_id=ids(1)[0]).head
    with pytest.raises(DomainError) as info:
        plan_worker_append(
            head, [ev("worker.started")], expected_seq=7, now_ms=NOW, event_ids=ids(1, 1)
        )
    assert info.value.code == "seq_conflict" and info.value.details["current_seq"] == 1
    with pytest.raises(DomainError) as info:
        plan_worker_append(
            head,
            [ev("worker.stopped"), ev("worker.heartbeat")],
            expected_seq=None,
            now_ms=NOW,
            event_ids=ids(2, 1),
        )
    assert info.value.code == "worker_stopped"


def test_reattach_only_within_the_same_org() -> None:
    head = plan_register(CreateWorker("acme", "w1"), now_ms=NOW, event_id=ids(1)[0]).head
    check_reattach(head, CreateWorker("acme", "w1"))
    with pytest.raises(DomainError) as info:
        check_reattach(head, CreateWorker("other", "w1"))
    assert info.value.code == "worker_exists"


@pytest.mark.parametrize(
    ("last", "now", "state", "age"),
    [
        (None, NOW, HeartbeatState.MISSING, None),
        (NOW - 1000, NOW, HeartbeatState.FRESH, 1000),
        (NOW - 30_000, NOW, HeartbeatState.FRESH, 30_000),
        (NOW - 30_001, NOW, HeartbeatState.STALE, 30_001),
        (NOW + 50, NOW, HeartbeatState.FRESH, 0),
    ],
)
def test_heartbeat_view(last: int | None, now: int, state: HeartbeatState, age: int | None) -> None:
    view = heartbeat_view(last, now, 30_000)
    assert (view.state, view.age_ms, view.stale_after_ms) == (state, age, 30_000)


def test_projection_of() -> None:
    assert projection_of(True, 0).state is ProjectionState.IN_SYNC
    lagging = projection_of(False, 4)
    assert (lagging.state, lagging.lag_events) == (ProjectionState.LAGGING, 4)
    unknown = projection_of(None, 0)
    assert (unknown.state, unknown.lag_events) == (ProjectionState.UNKNOWN, None)


def test_parse_create_worker() -> None:
    assert parse_create_worker({"org_id": "acme", "worker_id": "w-1"}) == CreateWorker(
        "acme", "w-1"
    )
    for body, field in [
        ({"worker_id": "w"}, "org_id"),
        ({"org_id": "a"}, "worker_id"),
        ({"org_id": "a", "worker_id": "w/1"}, "worker_id"),
        ({"org_id": "a", "worker_id": "w", "x": 1}, "x"),
    ]:
        with pytest.raises(ValidationError) as info:
            parse_create_worker(body)
        assert info.value.field == field


def test_parse_worker_append_uses_the_ingest_taxonomy() -> None:
    events, expected = parse_worker_append(
        {"events": [{"type": "worker.event", "payload": {"b": 1, "a": 2}}], "expected_seq": 3}
    )
    assert expected == 3 and events[0].payload_json == b'{"a":2,"b":1}'
    for refused in ("worker.registered", "worker.resumed", "run.started"):
        with pytest.raises(DomainError) as info:
            parse_worker_append({"events": [{"type": refused}]})
        assert info.value.code == "unknown_event_type"
        assert info.value.details["field"] == "events[0].type"
    with pytest.raises(ValidationError) as info:
        parse_worker_append({"events": [{"type": "worker.error", "payload": {"error": 3}}]})
    assert info.value.field == "events[0].payload.error"


def test_parse_command() -> None:
    (event,), expected = parse_command({}, "worker.heartbeat")
    assert (event.type, event.payload_json, event.idempotency_key, expected) == (
        "worker.heartbeat",
        b"{}",
        "",
        None,
    )
    (event,), expected = parse_command(
        {"payload": {"reason": "x"}, "idempotency_key": "k", "expected_seq": 2}, "worker.stopped"
    )
    assert (event.payload_json, event.idempotency_key, expected) == (b'{"reason":"x"}', "k", 2)
    for body, field in [
        ({"payload": []}, "payload"),
        ({"idempotency_key": 5}, "idempotency_key"),
        ({"expected_seq": -1}, "expected_seq"),
        ({"type": "x"}, "type"),
    ]:
        with pytest.raises(ValidationError) as info:
            parse_command(body, "worker.stopped")
        assert info.value.field == field


def test_uuid4_strings_are_distinct_version_4_uuids() -> None:
    ids = uuid4_strings(200)
    parsed = [uuid.UUID(text) for text in ids]
    assert len(set(ids)) == 200 and [str(u) for u in parsed] == ids
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed)
