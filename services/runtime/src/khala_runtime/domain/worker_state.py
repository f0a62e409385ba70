"""The codex worker state machine (DESIGN §6).

    (none)  --worker.registered--> registered
    registered | running | error --worker.started--> running
    registered | running | error --worker.error-->   error
    registered | running | error --worker.stopped--> stopped
    stopped --worker.resumed--> running
    registered | running | error --worker.heartbeat | worker.event |
                                   worker.request.received--> (unchanged)

`worker.registered` is appended only by the first create; `worker.resumed`
only by resume. A stopped worker refuses every event but `worker.resumed`
with `worker_stopped` (409) until it is resumed; resuming a worker that is not
stopped is `invalid_transition`. `error` is not terminal: a worker reports
`worker.started` again after it recovers.
"""

from __future__ import annotations

from enum import StrEnum

from khala_runtime.domain.errors import DomainError


class WorkerStatus(StrEnum):
    """Lifecycle status of a codex worker."""

    REGISTERED = "registered"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"


WORKER_REGISTERED = "worker.registered"
WORKER_RESUMED = "worker.resumed"
WORKER_STOPPED = "worker.stopped"
WORKER_HEARTBEAT = "worker.heartbeat"

# The taxonomy clients may send to `/events`.
INGEST_EVENT_TYPES = frozenset(
    {
        "worker.started",
        WORKER_STOPPED,
        "worker.error",
        WORKER_HEARTBEAT,
        "worker.event",
        "worker.request.received",
    }
)
_LIVE = (WorkerStatus.REGISTERED, WorkerStatus.RUNNING, WorkerStatus.ERROR)
_TRANSITIONS: dict[str, dict[WorkerStatus | None, WorkerStatus]] = {
    WORKER_REGISTERED: {None: WorkerStatus.REGISTERED},
    "worker.started": {s: WorkerStatus.RUNNING for s in _LIVE},
    "worker.error": {s: WorkerStatus.ERROR for s in _LIVE},
    WORKER_STOPPED: {s: WorkerStatus.STOPPED for s in _LIVE},
    WORKER_RESUMED: {WorkerStatus.STOPPED: WorkerStatus.RUNNING},
    WORKER_HEARTBEAT: {s: s for s in _LIVE},
    "worker.event": {s: s for s in _LIVE},
    "worker.request.received": {s: s for s in _LIVE},
}

WORKER_EVENT_TYPES = frozenset(_TRANSITIONS)


def is_ingest_event_type(event_type: str) -> bool:
    """Whether clients may send `event_type` to a worker's `/events`."""
    return event_type in INGEST_EVENT_TYPES


def worker_transition(status: WorkerStatus | None, event_type: str) -> WorkerStatus:
    """The status after `event_type` from `status`, or DomainError if not allowed."""
    allowed = _TRANSITIONS.get(event_type)
    if allowed is None:
        raise DomainError("unknown_event_type", f"unknown event type {event_type!r}")
    if status is WorkerStatus.STOPPED and event_type != WORKER_RESUMED:
        raise DomainError(
            "worker_stopped",
            f"worker is stopped; {event_type} is refused until it is resumed",
            worker_status=status.value,
        )
    target = allowed.get(status)
    if target is None:
        current = "(new)" if status is None else status.value
        raise DomainError(
            "invalid_transition",
            f"{event_type} is not allowed while the worker is {current}",
            worker_status=current,
        )
    return target
