"""Unit: exact refusals of the run/worker state machines and exact breaks of
the chain checker (docs/mutation.md). Clients see each refusal's code,
message and status details; the chain checker's break is what the audit and
the drills report, so the tests pin the values, not only that something failed."""

from __future__ import annotations

import pytest

from khala_runtime.domain.chain import GENESIS, ChainBreak, ChainChecker, event_content, link
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.run_state import RunStatus, is_run_event_type, transition
from khala_runtime.domain.worker_state import WorkerStatus, worker_transition
from openagents.runtime.v1.events_pb2 import RuntimeEvent


def _run_refusal(status: RunStatus | None, event_type: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        transition(status, event_type)
    return caught.value


def _worker_refusal(status: WorkerStatus | None, event_type: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        worker_transition(status, event_type)
    return caught.value


def test_is_run_event_type():
    assert is_run_event_type("run.started")
    assert not is_run_event_type("worker.started")


def test_run_unknown_event_type_refusal():
    error = _run_refusal(RunStatus.RUNNING, "run.exploded")
    assert (error.code, error.message, error.details) == (
        "unknown_event_type",
        "unknown event type 'run.exploded'",
        {},
    )


def test_run_terminal_refusal_names_the_status():
    error = _run_refusal(RunStatus.SUCCEEDED, "run.output")
    assert (error.code, error.message, error.details) == (
        "terminal_state",
        "run is succeeded; no event is accepted after it",
        {"run_status": "succeeded"},
    )


def test_run_invalid_transition_names_the_current_status():
    error = _run_refusal(RunStatus.CREATED, "run.paused")
    assert (error.code, error.message, error.details) == (
        "invalid_transition",
        "run.paused is not allowed while the run is created",
        {"run_status": "created"},
    )
    error = _run_refusal(None, "run.started")
    assert (error.code, error.message, error.details) == (
        "invalid_transition",
        "run.started is not allowed while the run is (new)",
        {"run_status": "(new)"},
    )


def test_worker_unknown_event_type_refusal():
    error = _worker_refusal(WorkerStatus.RUNNING, "worker.exploded")
    assert (error.code, error.message) == (
        "unknown_event_type",
        "unknown event type 'worker.exploded'",
    )


def test_worker_stopped_refusal_names_the_event():
    error = _worker_refusal(WorkerStatus.STOPPED, "worker.heartbeat")
    assert (error.code, error.message, error.details) == (
        "worker_stopped",
        "worker is stopped; worker.heartbeat is refused until it is resumed",
        {"worker_status": "stopped"},
    )


def test_worker_invalid_transition_names_the_current_status():
    error = _worker_refusal(None, "worker.started")
    assert (error.code, error.message, error.details) == (
        "invalid_transition",
        "worker.started is not allowed while the worker is (new)",
        {"worker_status": "(new)"},
    )
    error = _worker_refusal(WorkerStatus.RUNNING, "worker.resumed")
    assert (error.code, error.message, error.details) == (
        "invalid_transition",
        "worker.resumed is not allowed while the worker is running",
        {"worker_status": "running"},
    )


def _event(seq: int, payload: bytes = b'{"n":1}') -> RuntimeEvent:
    return RuntimeEvent(
        event_id=f"e{seq}",
        idempotency_key=f"k{seq}",
        occurred_at_ms=1000 + seq,
        org_id="acme",
        payload_json=payload,
        stream_id="run:r1",
        stream_seq=seq,
        type="run.output",
    )


def _chained(count: int) -> list[RuntimeEvent]:
    events, prev = [], GENESIS
    for seq in range(1, count + 1):
        event = _event(seq)
        prev = link(prev, event_content(event))
        event.chain_hash = prev
        events.append(event)
    return events


def test_empty_payload_is_hashed_as_the_empty_object():
    assert event_content(_event(1, b"")) == event_content(_event(1, b"{}"))


def test_seq_gap_break_names_expected_and_actual_seq():
    checker = ChainChecker()
    events = _chained(3)
    assert checker.feed(events[0]) is None
    assert checker.feed(events[2]) == ChainBreak(2, "seq_gap", "2", "3")
    # Broken stays broken: later events do not move it.
    assert checker.feed(events[1]) == ChainBreak(2, "seq_gap", "2", "3")


def test_chain_mismatch_break_carries_both_hashes():
    events = _chained(2)
    expected = events[1].chain_hash
    events[1].chain_hash = "f" * 64
    checker = ChainChecker()
    checker.feed(events[0])
    assert checker.feed(events[1]) == ChainBreak(2, "chain_mismatch", expected, "f" * 64)


def test_finish_head_beyond_the_log():
    checker = ChainChecker()
    for event in _chained(2):
        checker.feed(event)
    assert checker.finish(5, "x") == ChainBreak(3, "seq_gap", "log up to 5", "log ends at 2")


def test_finish_head_before_the_end_of_the_log():
    checker = ChainChecker()
    for event in _chained(3):
        checker.feed(event)
    assert checker.finish(1, "x") == ChainBreak(2, "head_mismatch", "head at 1", "log goes on to 3")


def test_finish_head_hash_differs():
    checker = ChainChecker()
    events = _chained(2)
    for event in events:
        checker.feed(event)
    assert checker.finish(2, "a" * 64) == ChainBreak(
        2, "head_mismatch", events[1].chain_hash, "a" * 64
    )
    # The break is kept.
    assert checker.finish(2, events[1].chain_hash) == ChainBreak(
        2, "head_mismatch", events[1].chain_hash, "a" * 64
    )


def test_finish_at_the_recorded_head_is_clean():
    checker = ChainChecker()
    events = _chained(2)
    for event in events:
        checker.feed(event)
    assert checker.finish(2, events[1].chain_hash) is None
