"""Where a subscription starts: the stale-cursor rules of DESIGN §8 / protocol §5-6.

`plan_start` turns a client cursor and the topic's current (epoch, head_seq,
oldest_seq) into either a `StartPlan` (snapshot, or replay after a seq) or a
`Stale` refusal with its deterministic reason. The same inputs always give the
same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from khala_gateway.domain import codes

DEFAULT_EPOCH = "1"


@dataclass(frozen=True)
class TopicHead:
    """A topic log's current epoch and retained seq range (0 = none)."""

    epoch: str = DEFAULT_EPOCH
    head_seq: int = 0
    oldest_seq: int = 0


@dataclass(frozen=True)
class Cursor:
    """A client's resume position: every frame up to `after_seq` of `epoch` applied."""

    epoch: str
    after_seq: int


@dataclass(frozen=True)
class StartPlan:
    """How to start: a snapshot as of `head.head_seq`, or frames after `after_seq`."""

    snapshot: bool
    after_seq: int


@dataclass(frozen=True)
class Stale:
    """The cursor cannot be resumed; `reason` is a stale_cursor reason."""

    reason: str

    @property
    def message(self) -> str:
        """Human-readable text for Error.message."""
        return _STALE_MESSAGES[self.reason]


_STALE_MESSAGES = {
    codes.EPOCH_CHANGED: "cursor epoch is not the topic's current epoch",
    codes.CURSOR_AHEAD: "cursor is ahead of the topic head",
    codes.RETENTION: "cursor older than retention",
    codes.REPLAY_BUDGET: "the replay would exceed the replay budget",
}


def fresh_start(head: TopicHead, is_doc: bool) -> StartPlan:
    """A fresh subscription: doc topics snapshot, event topics from the oldest frame."""
    if is_doc:
        return StartPlan(snapshot=True, after_seq=head.head_seq)
    if head.oldest_seq > 0:
        return StartPlan(snapshot=False, after_seq=head.oldest_seq - 1)
    return StartPlan(snapshot=False, after_seq=head.head_seq)


def plan_start(
    cursor: Cursor,
    head: TopicHead,
    *,
    is_doc: bool,
    snapshot_if_stale: bool,
    replay_budget: int = 0,
) -> StartPlan | Stale:
    """Decide how a subscription with `cursor` starts on a topic at `head`.

    `replay_budget` (0 = unlimited) caps how many frames a resume may replay;
    past it the cursor is stale with `replay_budget` (a doc topic with
    snapshot_if_stale gets a snapshot instead). A fresh subscription is never
    stale: it is bounded by retention instead.
    """
    if cursor.after_seq == 0:
        return fresh_start(head, is_doc)
    if cursor.epoch and cursor.epoch != head.epoch:
        return Stale(codes.EPOCH_CHANGED)
    if cursor.after_seq > head.head_seq:
        return Stale(codes.CURSOR_AHEAD)
    if head.oldest_seq > 0 and cursor.after_seq < head.oldest_seq - 1:
        if is_doc and snapshot_if_stale:
            return StartPlan(snapshot=True, after_seq=head.head_seq)
        return Stale(codes.RETENTION)
    if replay_budget <= 0 or head.head_seq - cursor.after_seq <= replay_budget:
        return StartPlan(snapshot=False, after_seq=cursor.after_seq)
    if is_doc and snapshot_if_stale:
        return StartPlan(snapshot=True, after_seq=head.head_seq)
    return Stale(codes.REPLAY_BUDGET)
