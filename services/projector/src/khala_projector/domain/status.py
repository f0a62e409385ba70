"""Projection status of a runtime stream: in sync when its checkpoint has
reached runtime's head, lagging otherwise (lag in events)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamStatus:
    """How far the projection of one stream trails runtime's head."""

    stream_id: str
    in_sync: bool
    checkpoint_seq: int
    lag_events: int


def stream_status(stream_id: str, head_seq: int, checkpoint_seq: int) -> StreamStatus:
    """Status of `stream_id` given runtime's head and the projector's checkpoint."""
    lag = max(0, head_seq - checkpoint_seq)
    return StreamStatus(stream_id, lag == 0, checkpoint_seq, lag)
