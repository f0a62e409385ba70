"""Unit: the run state machine, as a full table."""

from __future__ import annotations

import pytest

from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.run_state import RUN_EVENT_TYPES, RunStatus, transition

C, R, P = RunStatus.CREATED, RunStatus.RUNNING, RunStatus.PAUSED
S, F, X = RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED

# (from, event) -> to; every pair not listed among live states is invalid_transition.
ALLOWED = {
    (None, "run.created"): C,
    (C, "run.started"): R,
    (C, "run.failed"): F,
    (C, "run.canceled"): X,
    (R, "run.paused"): P,
    (R, "run.output"): R,
    (R, "run.completed"): S,
    (R, "run.failed"): F,
    (R, "run.canceled"): X,
    (P, "run.resumed"): R,
    (P, "run.output"): P,
    (P, "run.completed"): S,
    (P, "run.failed"): F,
    (P, "run.canceled"): X,
}


@pytest.mark.parametrize("status", [None, C, R, P])
@pytest.mark.parametrize("event_type", sorted(RUN_EVENT_TYPES))
def test_live_states(status: RunStatus | None, event_type: str) -> None:
    expected = ALLOWED.get((status, event_type))
    if expected is not None:
        assert transition(status, event_type) is expected
    else:
        with pytest.raises(DomainError) as info:
            transition(status, event_type)
        assert info.value.code == "invalid_transition"


@pytest.mark.parametrize("status", [S, F, X])
@pytest.mark.parametrize("event_type", sorted(RUN_EVENT_TYPES))
def test_nothing_after_terminal(status: RunStatus, event_type: str) -> None:
    with pytest.raises(DomainError) as info:
        transition(status, event_type)
    assert info.value.code == "terminal_state"


@pytest.mark.parametrize("status", [None, C, R, S])
def test_unknown_type(status: RunStatus | None) -> None:
    with pytest.raises(DomainError) as info:
        transition(status, "run.exploded")
    assert info.value.code == "unknown_event_type"


def test_event_types_are_the_designed_ones() -> None:
    assert RUN_EVENT_TYPES == {
        "run.created",
        "run.started",
        "run.paused",
        "run.resumed",
        "run.output",
        "run.completed",
        "run.failed",
        "run.canceled",
    }
