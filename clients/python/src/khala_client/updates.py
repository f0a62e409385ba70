"""What `KhalaClient.updates()` yields: connection, subscription and frame events."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from openagents.sync.v1 import frames_pb2, ws_pb2


@dataclass(frozen=True)
class Connected:
    """A socket is open and Welcome arrived; subscriptions follow."""

    connection_id: str
    welcome: ws_pb2.Welcome


@dataclass(frozen=True)
class Disconnected:
    """The socket ended (or could not open); the next attempt starts in `retry_in_s`."""

    close_code: int | None
    reason: str
    retry_in_s: float


@dataclass(frozen=True)
class Subscribed:
    """The server accepted a topic's cursor (`resumed`) or a fresh subscription."""

    topic: str
    epoch: str
    head_seq: int
    oldest_seq: int
    resumed: bool


@dataclass(frozen=True)
class SnapshotStarted:
    """A snapshot of a doc topic begins: collect the documents that follow."""

    topic: str
    epoch: str
    as_of_seq: int


@dataclass(frozen=True)
class SnapshotCompleted:
    """The snapshot is complete: replace the topic's state with what was collected."""

    topic: str
    as_of_seq: int


@dataclass(frozen=True)
class SnapshotAborted:
    """The socket ended inside a snapshot: discard what was collected for it."""

    topic: str


@dataclass(frozen=True)
class FrameApplied:
    """A frame to apply, exactly once and in order; `payload` is decoded by schema_version.

    `payload` is None for DOC_DELETE. `in_snapshot` frames belong to the snapshot
    being collected. The cursor is stored after the consumer asks for the next update.
    """

    topic: str
    frame: frames_pb2.KhalaFrame
    payload: Message | None
    in_snapshot: bool

    @property
    def seq(self) -> int:
        """The frame's seq."""
        return int(self.frame.seq)

    @property
    def key(self) -> str:
        """The document key (DOC frames) or event id (EVENT frames)."""
        return str(self.frame.key)

    @property
    def deleted(self) -> bool:
        """Whether this is a DOC_DELETE."""
        return bool(self.frame.kind == frames_pb2.FRAME_KIND_DOC_DELETE)


@dataclass(frozen=True)
class Live:
    """Replay of `topic` caught up with `seq` (`live`: frames now arrive as committed)."""

    topic: str
    seq: int
    live: bool


@dataclass(frozen=True)
class TopicReset:
    """Drop every piece of local state of `topic`: it restarts fresh (stale cursor, new epoch)."""

    topic: str
    reason: str


@dataclass(frozen=True)
class TopicFailed:
    """The topic was refused or stopped (`forbidden_topic`, `invalid_topic`, unknown schema)."""

    topic: str
    code: str
    message: str


@dataclass(frozen=True)
class Notice:
    """Something worth logging (a gap that was healed, a server error, a delayed resubscribe)."""

    topic: str
    message: str


Update = (
    Connected
    | Disconnected
    | Subscribed
    | SnapshotStarted
    | SnapshotCompleted
    | SnapshotAborted
    | FrameApplied
    | Live
    | TopicReset
    | TopicFailed
    | Notice
)
