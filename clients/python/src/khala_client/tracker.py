"""The per-topic apply rule of protocol §5, as a pure state machine.

Guarantee it gives the application: per topic, a frame is reported APPLY at
most once and only in order: seq == last_applied + 1 (or, fresh on an event
topic, the oldest retained seq), or any increasing seq inside a snapshot.
Frames at or below the cursor are DUPLICATE (idempotent apply); a frame of
another epoch is EPOCH_CHANGED (drop the topic's state, resubscribe fresh); a
frame past the expected seq is GAP (resubscribe from the cursor). Frames that
arrive while no subscription is active (after Unsubscribe, or before the
resubscription's `Subscribed`) are IGNORED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from khala_client.cursors import Cursor


class Verdict(enum.Enum):
    """What to do with one frame."""

    APPLY = "apply"
    DUPLICATE = "duplicate"
    EPOCH_CHANGED = "epoch_changed"
    GAP = "gap"
    IGNORED = "ignored"


@dataclass
class TopicTracker:
    """One topic's cursor and where the next frame must be."""

    topic: str
    epoch: str = ""
    last_applied: int = 0
    expected_next: int = 1
    active: bool = False
    snapshot_as_of: int | None = None
    snapshot_last: int = 0

    @classmethod
    def from_cursor(cls, topic: str, cursor: Cursor) -> TopicTracker:
        """A tracker resuming from a stored cursor."""
        return cls(topic, cursor.epoch, cursor.after_seq, cursor.after_seq + 1)

    @property
    def cursor(self) -> Cursor:
        """What to store and to send on resubscribe."""
        return Cursor(self.epoch, self.last_applied)

    @property
    def in_snapshot(self) -> bool:
        """Between SnapshotBegin and SnapshotEnd."""
        return self.snapshot_as_of is not None

    def reset(self) -> None:
        """Forget everything: the next subscription is fresh (epoch "", after_seq 0)."""
        self.epoch = ""
        self.last_applied = 0
        self.expected_next = 1
        self.active = False
        self.snapshot_as_of = None
        self.snapshot_last = 0

    def deactivate(self) -> None:
        """No subscription on the server: frames until the next `Subscribed` are ignored."""
        self.active = False
        self.snapshot_as_of = None

    def subscribed(self, epoch: str, oldest_seq: int) -> None:
        """The server accepted our cursor (or a fresh subscription)."""
        self.active = True
        self.snapshot_as_of = None
        if self.last_applied == 0:
            self.epoch = epoch
            self.expected_next = oldest_seq if oldest_seq > 0 else 1
        elif not self.epoch:
            self.epoch = epoch

    def snapshot_begin(self, epoch: str, as_of_seq: int) -> None:
        """A snapshot replaces the topic's state; DOC frames up to `as_of_seq` follow."""
        self.epoch = epoch
        self.snapshot_as_of = as_of_seq
        self.snapshot_last = 0

    def snapshot_end(self, as_of_seq: int) -> Cursor:
        """The snapshot is complete: the cursor becomes `as_of_seq`."""
        self.snapshot_as_of = None
        self.last_applied = as_of_seq
        self.expected_next = as_of_seq + 1
        return self.cursor

    def judge(self, epoch: str, seq: int) -> Verdict:
        """Decide one frame (no change: call `applied` once it is applied)."""
        if not self.active:
            return Verdict.IGNORED
        if epoch != self.epoch:
            return Verdict.EPOCH_CHANGED
        if self.snapshot_as_of is not None:
            if seq <= self.snapshot_last:
                return Verdict.DUPLICATE
            return Verdict.GAP if seq > self.snapshot_as_of else Verdict.APPLY
        if seq <= self.last_applied:
            return Verdict.DUPLICATE
        return Verdict.APPLY if seq == self.expected_next else Verdict.GAP

    def applied(self, seq: int) -> None:
        """Advance past a frame `judge` said to apply."""
        if self.snapshot_as_of is not None:
            self.snapshot_last = seq
        else:
            self.last_applied = seq
            self.expected_next = seq + 1

    def accept(self, epoch: str, seq: int) -> Verdict:
        """`judge`, then `applied` when the verdict is APPLY."""
        verdict = self.judge(epoch, seq)
        if verdict is Verdict.APPLY:
            self.applied(seq)
        return verdict
