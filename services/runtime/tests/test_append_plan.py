"""Unit: planning creates and appends (seq, chain, receipt, state, clock)."""

from __future__ import annotations

import json

import pytest

from khala_runtime.domain.append import check_repeat_create, plan_append, plan_create
from khala_runtime.domain.chain import GENESIS, verify_chain
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.model import CreateRun
from khala_runtime.domain.run_state import RunStatus
from openagents.runtime.v1.events_pb2 import EventInput

NOW = 1_700_000_000_000


def ids(n: int, start: int = 0) -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(start, start + n)]


def ev(type_: str, **payload: object) -> EventInput:
    return EventInput(type=type_, payload_json=json.dumps(payload, sort_keys=True).encode())


def created() -> tuple[CreateRun, object]:
    request = CreateRun(org_id="acme", run_id="r1", title="Build")
    return request, plan_create(request, now_ms=NOW, event_id=ids(1)[0])


def test_create_appends_run_created_at_seq_1() -> None:
    _, plan = created()
    (event,) = plan.events
    assert (event.stream_seq, event.type, event.stream_id) == (1, "run.created", "run:r1")
    assert json.loads(event.payload_json) == {"title": "Build"}
    assert plan.head.status is RunStatus.CREATED and plan.head.last_seq == 1
    assert plan.receipt.first_seq == plan.receipt.last_seq == 1
    assert verify_chain(plan.events, GENESIS)
    assert plan.head.chain_hash == event.chain_hash == plan.receipt.chain_hash


def test_append_is_gapless_and_chained() -> None:
    _, first = created()
    second = plan_append(
        first.head,
        [ev("run.started"), ev("run.output", text="a")],
        expected_seq=1,
        now_ms=NOW + 5,
        event_ids=ids(2, 1),
    )
    third = plan_append(
        second.head, [ev("run.paused")], expected_seq=None, now_ms=NOW + 9, event_ids=ids(1, 3)
    )
    events = [*first.events, *second.events, *third.events]
    assert [e.stream_seq for e in events] == [1, 2, 3, 4]
    assert verify_chain(events)
    assert (second.receipt.first_seq, second.receipt.last_seq) == (2, 3)
    assert list(second.receipt.event_ids) == ids(2, 1)
    assert third.head.status is RunStatus.PAUSED and third.head.last_seq == 4
    assert third.receipt.chain_hash == events[-1].chain_hash


def test_expected_seq_conflict_reports_current() -> None:
    _, first = created()
    with pytest.raises(DomainError) as info:
        plan_append(
            first.head, [ev("run.started")], expected_seq=0, now_ms=NOW, event_ids=ids(1, 1)
        )
    assert info.value.code == "seq_conflict"
    assert info.value.details == {"current_seq": 1}


def test_illegal_event_in_batch_refuses_whole_batch() -> None:
    _, first = created()
    with pytest.raises(DomainError) as info:
        plan_append(
            first.head,
            [ev("run.started"), ev("run.resumed")],
            expected_seq=None,
            now_ms=NOW,
            event_ids=ids(2, 1),
        )
    assert info.value.code == "invalid_transition"


def test_clock_never_runs_backwards_in_a_stream() -> None:
    _, first = created()
    plan = plan_append(
        first.head, [ev("run.started")], expected_seq=None, now_ms=NOW - 1000, event_ids=ids(1, 1)
    )
    assert plan.events[0].occurred_at_ms == NOW
    assert plan.head.updated_at_ms == NOW


def test_repeat_create_rules() -> None:
    request, plan = created()
    check_repeat_create(plan.head, request)
    with pytest.raises(DomainError) as info:
        check_repeat_create(plan.head, CreateRun("other", "r1", "Build"))
    assert info.value.code == "run_exists"
    with pytest.raises(DomainError) as info:
        check_repeat_create(plan.head, CreateRun("acme", "r1", "Different"))
    assert info.value.code == "run_exists"
