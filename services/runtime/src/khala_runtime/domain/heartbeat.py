"""Heartbeat freshness of a worker, judged against runtime's clock.

A worker that never sent a heartbeat is `missing`; one whose latest
heartbeat is more than `stale_after_ms` old is `stale`; otherwise `fresh`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HeartbeatState(StrEnum):
    """Freshness of a worker's latest heartbeat."""

    FRESH = "fresh"
    STALE = "stale"
    MISSING = "missing"


@dataclass(frozen=True)
class HeartbeatView:
    """A worker's heartbeat state, its age (None when missing) and the threshold."""

    state: HeartbeatState
    age_ms: int | None
    stale_after_ms: int


def heartbeat_view(
    last_heartbeat_at_ms: int | None, now_ms: int, stale_after_ms: int
) -> HeartbeatView:
    """Freshness of a heartbeat received at `last_heartbeat_at_ms`, as of `now_ms`."""
    if last_heartbeat_at_ms is None:
        return HeartbeatView(HeartbeatState.MISSING, None, stale_after_ms)
    age = max(0, now_ms - last_heartbeat_at_ms)
    state = HeartbeatState.STALE if age > stale_after_ms else HeartbeatState.FRESH
    return HeartbeatView(state, age, stale_after_ms)
