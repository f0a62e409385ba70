"""Projection status of a runtime stream as reported by the projector.

`in_sync` when the projector's checkpoint has reached runtime's head,
`lagging` (with the lag in events) otherwise, and `unknown` when the projector
could not answer in time: a snapshot read never fails because of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ProjectionState(StrEnum):
    """How a stream's projection relates to runtime's head."""

    IN_SYNC = "in_sync"
    LAGGING = "lagging"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Projection:
    """A stream's projection state and lag (None when unknown)."""

    state: ProjectionState
    lag_events: int | None


UNKNOWN = Projection(ProjectionState.UNKNOWN, None)


def projection_of(in_sync: bool | None, lag_events: int) -> Projection:
    """The projection from a projector answer (`in_sync` None: no answer)."""
    if in_sync is None:
        return UNKNOWN
    if in_sync:
        return Projection(ProjectionState.IN_SYNC, 0)
    return Projection(ProjectionState.LAGGING, lag_events)
