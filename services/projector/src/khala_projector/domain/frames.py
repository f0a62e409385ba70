"""A committed topic-log frame, as the publisher and the rebuild doorbell send it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoredFrame:
    """A committed topic-log row, as published to the fanout."""

    frame_id: int
    topic: str
    epoch: str
    seq: int
    frame_bytes: bytes

    @property
    def message_id(self) -> str:
        """The fanout message id `<topic>/<epoch>/<seq>`."""
        return f"{self.topic}/{self.epoch}/{self.seq}"
