"""The run state machine (DESIGN §6).

    (none) --run.created--> created --run.started--> running
    running --run.paused--> paused --run.resumed--> running
    running | paused --run.completed--> succeeded
    created | running | paused --run.failed--> failed
    created | running | paused --run.canceled--> canceled
    running | paused --run.output--> (unchanged)

`run.created` is appended only by run creation. Any event on a terminal run is
`terminal_state`; any other event not allowed from the current status is
`invalid_transition`.
"""

from __future__ import annotations

from enum import StrEnum

from khala_runtime.domain.errors import DomainError


class RunStatus(StrEnum):
    """Lifecycle status of a run."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED})

RUN_CREATED = "run.created"
_ACTIVE = (RunStatus.RUNNING, RunStatus.PAUSED)
_LIVE = (RunStatus.CREATED, RunStatus.RUNNING, RunStatus.PAUSED)

_TRANSITIONS: dict[str, dict[RunStatus | None, RunStatus]] = {
    RUN_CREATED: {None: RunStatus.CREATED},
    "run.started": {RunStatus.CREATED: RunStatus.RUNNING},
    "run.paused": {RunStatus.RUNNING: RunStatus.PAUSED},
    "run.resumed": {RunStatus.PAUSED: RunStatus.RUNNING},
    "run.output": {s: s for s in _ACTIVE},
    "run.completed": {s: RunStatus.SUCCEEDED for s in _ACTIVE},
    "run.failed": {s: RunStatus.FAILED for s in _LIVE},
    "run.canceled": {s: RunStatus.CANCELED for s in _LIVE},
}

RUN_EVENT_TYPES = frozenset(_TRANSITIONS)


def is_run_event_type(event_type: str) -> bool:
    """Whether `event_type` is one of the run event types."""
    return event_type in _TRANSITIONS


def transition(status: RunStatus | None, event_type: str) -> RunStatus:
    """The status after `event_type` from `status`, or DomainError if not allowed."""
    allowed = _TRANSITIONS.get(event_type)
    if allowed is None:
        raise DomainError("unknown_event_type", f"unknown event type {event_type!r}")
    if status is not None and status.is_terminal:
        raise DomainError(
            "terminal_state",
            f"run is {status.value}; no event is accepted after it",
            run_status=status.value,
        )
    target = allowed.get(status)
    if target is None:
        current = "(new)" if status is None else status.value
        raise DomainError(
            "invalid_transition",
            f"{event_type} is not allowed while the run is {current}",
            run_status=current,
        )
    return target
