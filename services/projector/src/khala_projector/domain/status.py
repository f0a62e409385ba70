"""Projection status of a runtime stream: in sync when its checkpoint has
reached runtime's head, lagging otherwise, with the lag in events and, when
both event times are known, in seconds of event time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamStatus:
    """How far the projection of one stream trails runtime's head."""

    stream_id: str
    in_sync: bool
    checkpoint_seq: int
    lag_events: int
    # occurred_at_ms of the last event folded in (0: unknown or none).
    checkpoint_at_ms: int = 0

    def lag_seconds(self, head_at_ms: int) -> float:
        """Event-time lag: runtime's head event time minus the last projected one's.

        0 when in sync or when either time is unknown (0); never negative.
        """
        if self.in_sync or head_at_ms <= 0 or self.checkpoint_at_ms <= 0:
            return 0.0
        return max(0, head_at_ms - self.checkpoint_at_ms) / 1000


def stream_status(
    stream_id: str, head_seq: int, checkpoint_seq: int, checkpoint_at_ms: int = 0
) -> StreamStatus:
    """Status of `stream_id` given runtime's head and the projector's checkpoint."""
    lag = max(0, head_seq - checkpoint_seq)
    return StreamStatus(stream_id, lag == 0, checkpoint_seq, lag, checkpoint_at_ms)
