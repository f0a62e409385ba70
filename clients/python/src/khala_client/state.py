"""In-memory state built from `KhalaClient` updates: documents and event logs.

Doc topics hold the latest document per key: a snapshot is collected apart and
swapped in whole at `SnapshotCompleted` (keys it does not contain are gone),
`DOC_DELETE` removes a key. Event topics keep their events in seq order.
`TopicReset` drops a topic's state. Use it with a `MemoryCursorStore`: state
and cursors then live and die together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from khala_client.updates import (
    FrameApplied,
    SnapshotAborted,
    SnapshotCompleted,
    SnapshotStarted,
    TopicReset,
    Update,
)
from openagents.sync.v1 import frames_pb2


@dataclass
class LocalState:
    """Documents by topic and key, and events by topic."""

    docs: dict[str, dict[str, Message]] = field(default_factory=dict)
    events: dict[str, list[FrameApplied]] = field(default_factory=dict)
    _pending: dict[str, dict[str, Message]] = field(default_factory=dict)

    def apply(self, update: Update) -> None:
        """Fold one update into the state."""
        if isinstance(update, SnapshotStarted):
            self._pending[update.topic] = {}
        elif isinstance(update, SnapshotCompleted):
            self.docs[update.topic] = self._pending.pop(update.topic, {})
        elif isinstance(update, SnapshotAborted):
            self._pending.pop(update.topic, None)
        elif isinstance(update, TopicReset):
            self.docs.pop(update.topic, None)
            self.events.pop(update.topic, None)
            self._pending.pop(update.topic, None)
        elif isinstance(update, FrameApplied):
            self._apply_frame(update)

    def _apply_frame(self, update: FrameApplied) -> None:
        if update.frame.kind == frames_pb2.FRAME_KIND_EVENT:
            self.events.setdefault(update.topic, []).append(update)
            return
        target = self._pending.get(update.topic) if update.in_snapshot else None
        if target is None:
            target = self.docs.setdefault(update.topic, {})
        if update.deleted or update.payload is None:
            target.pop(update.key, None)
        else:
            target[update.key] = update.payload

    def event_seqs(self, topic: str) -> list[int]:
        """The seqs applied on an event topic, in order."""
        return [u.seq for u in self.events.get(topic, [])]
