"""One socket's subscription to one topic: replay, snapshot, live delivery, gap fill.

Guarantee: for each (socket, topic) the frames handed to the socket have
strictly increasing `seq`, with no duplicate and no gap, within the
subscription's epoch (inside a snapshot the seqs are increasing and skip
compacted versions; the frames after it continue at `as_of_seq + 1`).

How: every frame outside a snapshot goes through `_emit`, which accepts only
`last_sent + 1`. Live frames from the broker with `seq <= last_sent` are
dropped; a live frame beyond `last_sent + 1` is buffered and the missing
range is read from Postgres (the ordering oracle) before it. While a Postgres
read is in flight (`busy`), or during replay, live frames are only buffered, so
a frame can never be sent both from the broker and from the database.
`known_head` (the highest seq known to exist, from the subscribe-time head,
live frames and the head poll) says how far to read; the head poll raises it
when a broker message was lost, so a subscriber never waits forever.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from khala_gateway import metrics
from khala_gateway.domain import codes
from khala_gateway.domain.cursor import StartPlan, TopicHead
from khala_gateway.domain.outbox import Lane, Outbox
from khala_gateway.domain.sequencing import Decision, classify, contiguous_from, fill_range
from khala_gateway.domain.wire import WireFrame
from khala_gateway.metrics import TopicStats
from khala_gateway.storage.topic_log import TopicLog
from openagents.sync.v1 import ws_pb2

MISSING_RETRY_S = 0.25


class ReplayGate:
    """Counts replays (snapshot or catch-up) in progress in this process, against a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.active = 0

    def has_room(self) -> bool:
        """Whether another replay may start."""
        return self.active < self.cap


class State(Enum):
    STARTING = "starting"  # registered for live frames, head not read yet
    SNAPSHOT = "snapshot"  # sending the latest doc per key as of `as_of`
    CATCHING_UP = "catching_up"  # replaying from Postgres towards known_head
    LIVE = "live"  # caught up once (Watermark sent)
    CLOSED = "closed"


_LIVE = State.LIVE


class Owner(Protocol):
    """What a subscription needs from its connection."""

    outbox: Outbox

    def frames_queued(self) -> None: ...

    def offer_live(self, lane: Lane, frame: WireFrame) -> bool: ...

    def needs_feed(self, sub: Subscription) -> None: ...

    def feed_later(self, delay_s: float) -> None: ...


@dataclass
class StepOutcome:
    """Result of one unit of feeder work: progress, or an error ending the subscription."""

    progressed: bool = False
    end_with: ws_pb2.Error | None = None


def stale_error(topic: str, reason: str, message: str, head: TopicHead) -> ws_pb2.Error:
    """A stale_cursor error for `topic` carrying the head it was judged against."""
    return ws_pb2.Error(
        code=codes.STALE_CURSOR,
        message=message,
        topic=topic,
        reason=reason,
        oldest_seq=head.oldest_seq,
        head_seq=head.head_seq,
    )


class Subscription:
    """Delivery state of one topic on one socket."""

    def __init__(
        self,
        owner: Owner,
        topic: str,
        lane: Lane,
        stats: TopicStats,
        *,
        max_pending: int,
        gate: ReplayGate | None = None,
    ) -> None:
        self.owner = owner
        self.gate = gate
        self.replaying = False
        self.topic = topic
        self.lane = lane
        self.stats = stats
        self.max_pending = max_pending
        self.state = State.STARTING
        self.epoch = ""
        self.last_sent = 0
        self.known_head = 0
        self.pending: dict[int, WireFrame] = {}
        self.snapshot_seqs: deque[int] = deque()
        self.as_of = 0
        self.busy = False
        self.holds_binding = False
        self.epoch_suspect = False
        self.retry_at = 0.0
        self._poll_head = 0
        self._started_at = 0.0

    # -- broker and head poll (synchronous, on the event loop) --------------

    def on_live(self, frame: WireFrame) -> None:
        """A frame from the fanout queue."""
        state = self.state
        seq = frame.seq
        if (
            state is _LIVE
            and seq == self.last_sent + 1
            and frame.epoch == self.epoch
            and not self.busy
            and not self.pending
            and self.owner.offer_live(self.lane, frame)
        ):
            # The common case: the next frame, straight to the socket's write.
            self.last_sent = seq
            self.stats.frames_sent += 1
            if seq > self.known_head:
                self.known_head = seq
            elif seq < self.known_head:
                self.owner.needs_feed(self)
            return
        self._on_live_slow(frame)

    def _on_live_slow(self, frame: WireFrame) -> None:
        """A live frame off the fast path: buffer, drop, queue, or wake the feeder."""
        state = self.state
        if state is State.CLOSED:
            return
        if state is State.STARTING:
            self._buffer(frame)
            return
        if frame.epoch != self.epoch:
            self.epoch_suspect = True
            self.owner.needs_feed(self)
            return
        seq = frame.seq
        if seq > self.known_head:
            self.known_head = seq
        decision = classify(seq, self.last_sent)
        if decision is Decision.DROP:
            self._dropped()
            return
        if (
            decision is Decision.SEND
            and state is State.LIVE
            and not self.busy
            and self.owner.outbox.room() > 0
        ):
            self._emit(frame)
            if self.pending:
                self._drain_pending()
            self.owner.frames_queued()
            if self.last_sent < self.known_head:
                self.owner.needs_feed(self)
            return
        self._buffer(frame)
        self.owner.needs_feed(self)

    def on_head(self, head: TopicHead) -> None:
        """The periodic head poll read this topic's row.

        A head that the previous poll already saw and that has still not
        arrived live means its broker message was lost: read it from Postgres.
        """
        if self.state in (State.STARTING, State.CLOSED):
            return
        if head.epoch != self.epoch:
            self.epoch_suspect = True
            self.owner.needs_feed(self)
            return
        if self._poll_head > self.known_head:
            self.known_head = max(self._poll_head, head.head_seq)
            metrics.HEAD_POLL_CATCHES.inc()
            self.owner.needs_feed(self)
        self._poll_head = head.head_seq

    # -- start ---------------------------------------------------------------

    def begin(self, head: TopicHead, plan: StartPlan, snapshot_seqs: list[int]) -> None:
        """Start delivery after Subscribed: snapshot or replay, then live."""
        self.epoch = head.epoch
        self.known_head = head.head_seq
        self._poll_head = head.head_seq
        for seq, frame in list(self.pending.items()):
            if frame.epoch != self.epoch:
                del self.pending[seq]
                self.epoch_suspect = True
            elif seq > self.known_head:
                self.known_head = seq
        self._started_at = time.monotonic()
        if plan.snapshot:
            self.as_of = head.head_seq
            self.last_sent = head.head_seq
            self.snapshot_seqs = deque(snapshot_seqs)
            self.owner.outbox.push(
                self.lane,
                ws_pb2.ServerMessage(
                    snapshot_begin=ws_pb2.SnapshotBegin(
                        topic=self.topic, epoch=self.epoch, as_of_seq=self.as_of
                    )
                ),
            )
            self.state = State.SNAPSHOT
        else:
            self.last_sent = plan.after_seq
            self.state = State.CATCHING_UP
        if plan.snapshot or self.last_sent < self.known_head:
            self.stats.replays += 1
            metrics.REPLAYS.inc()
            self._enter_replay()
        self._purge_pending()
        self.owner.frames_queued()
        self.owner.needs_feed(self)

    def close(self) -> None:
        """Stop delivery; later frames are ignored."""
        self.state = State.CLOSED
        self._leave_replay()
        self.pending.clear()
        self.snapshot_seqs.clear()

    # -- feeder work (asynchronous, one step at a time) ------------------------

    def needs_work(self) -> bool:
        """Whether the feeder has something to do for this subscription."""
        if self.state in (State.STARTING, State.CLOSED):
            return False
        if self.epoch_suspect or self.state is not State.LIVE:
            return True
        return bool(self.pending) or self.last_sent < self.known_head

    async def step(self, log: TopicLog, chunk: int, now: float) -> StepOutcome:
        """One bounded unit of work: an epoch check, a snapshot chunk or a replay/fill chunk."""
        if self.state in (State.STARTING, State.CLOSED):
            return StepOutcome()
        if self.epoch_suspect:
            return await self._check_epoch(log)
        if self.state is State.SNAPSHOT:
            return await self._snapshot_step(log, chunk)
        before = (self.last_sent, self.state)
        self._drain_pending()
        outcome = StepOutcome()
        if self.last_sent < self.known_head and now >= self.retry_at:
            outcome = await self._fill(log, chunk, now)
            # The state may have changed during the read (mypy narrows it across the await).
            closed = self.state is State.CLOSED  # type: ignore[comparison-overlap]
            if outcome.end_with is not None or closed:
                return outcome
            self._drain_pending()
        if self.state is State.CATCHING_UP and self.last_sent >= self.known_head:
            self._go_live()
        outcome.progressed = outcome.progressed or before != (self.last_sent, self.state)
        if outcome.progressed:
            self.owner.frames_queued()
        return outcome

    async def _check_epoch(self, log: TopicLog) -> StepOutcome:
        head = await log.head(self.topic)
        if self.state is State.CLOSED:
            return StepOutcome()
        if head.epoch != self.epoch:
            error = stale_error(
                self.topic, codes.EPOCH_CHANGED, "the topic moved to a new epoch", head
            )
            return StepOutcome(progressed=True, end_with=error)
        self.epoch_suspect = False
        for seq, frame in list(self.pending.items()):
            if frame.epoch != self.epoch:
                del self.pending[seq]
        self.known_head = max(self.known_head, head.head_seq)
        return StepOutcome(progressed=True)

    async def _snapshot_step(self, log: TopicLog, chunk: int) -> StepOutcome:
        room = self.owner.outbox.room()
        take = min(chunk, room, len(self.snapshot_seqs))
        if take > 0:
            seqs = [self.snapshot_seqs.popleft() for _ in range(take)]
            rows = await log.frames_by_seq(self.topic, self.epoch, seqs)
            if self.state is State.CLOSED:
                return StepOutcome()
            # A row compacted meanwhile was superseded by a frame after as_of,
            # which the continuation delivers.
            for seq, data in rows:
                self.owner.outbox.push(self.lane, WireFrame(seq, self.epoch, data))
                self.stats.frames_sent += 1
            metrics.REPLAY_FRAMES.inc(len(rows))
        if not self.snapshot_seqs:
            self.owner.outbox.push(
                self.lane,
                ws_pb2.ServerMessage(
                    snapshot_end=ws_pb2.SnapshotEnd(topic=self.topic, as_of_seq=self.as_of)
                ),
            )
            self.state = State.CATCHING_UP
            self._purge_pending()
            if self.last_sent >= self.known_head:
                self._go_live()
        self.owner.frames_queued()
        return StepOutcome(progressed=take > 0 or self.state is not State.SNAPSHOT)

    async def _fill(self, log: TopicLog, chunk: int, now: float) -> StepOutcome:
        room = self.owner.outbox.room()
        if room <= 0:
            return StepOutcome()
        lowest_buffered = min(self.pending) if self.pending else None
        upto = fill_range(self.last_sent, self.known_head, min(chunk, room), lowest_buffered)
        if upto <= self.last_sent:
            return StepOutcome()
        start = self.last_sent
        self.busy = True
        try:
            rows = await log.frames_after(self.topic, self.epoch, start, upto, upto - start)
        finally:
            self.busy = False
        if self.state is State.CLOSED or self.last_sent != start:
            return StepOutcome()
        usable = contiguous_from(start, [seq for seq, _ in rows])
        for seq, data in rows[:usable]:
            self._emit(WireFrame(seq, self.epoch, data))
        if self.state is State.LIVE:
            metrics.GAP_FILLS.inc()
            metrics.GAP_FILL_FRAMES.inc(usable)
        else:
            metrics.REPLAY_FRAMES.inc(usable)
        if self.last_sent >= upto:
            return StepOutcome(progressed=True)
        return await self._missing(log, now, progressed=usable > 0)

    async def _missing(self, log: TopicLog, now: float, *, progressed: bool) -> StepOutcome:
        """Rows expected in Postgres were not there: retention, a new epoch, or a lagging read."""
        head = await log.head(self.topic)
        if head.epoch != self.epoch:
            error = stale_error(
                self.topic, codes.EPOCH_CHANGED, "the topic moved to a new epoch", head
            )
            return StepOutcome(progressed=True, end_with=error)
        if head.oldest_seq > self.last_sent + 1:
            error = stale_error(
                self.topic, codes.RETENTION, "frames needed were removed by retention", head
            )
            return StepOutcome(progressed=True, end_with=error)
        self.retry_at = now + MISSING_RETRY_S
        self.owner.feed_later(MISSING_RETRY_S)
        return StepOutcome(progressed=progressed)

    # -- helpers ---------------------------------------------------------------

    def _emit(self, frame: WireFrame) -> None:
        if frame.seq != self.last_sent + 1:  # the invariant; unreachable by construction
            raise RuntimeError(f"{self.topic}: seq {frame.seq} after {self.last_sent}")
        self.owner.outbox.push(self.lane, frame)
        self.last_sent = frame.seq
        self.stats.frames_sent += 1

    def _buffer(self, frame: WireFrame) -> None:
        if frame.seq in self.pending or len(self.pending) < self.max_pending:
            self.pending[frame.seq] = frame

    def _dropped(self) -> None:
        self.stats.drops += 1
        metrics.HOT.duplicate_drops += 1

    def _purge_pending(self) -> None:
        for seq in [s for s in self.pending if s <= self.last_sent]:
            del self.pending[seq]
            self._dropped()

    def _drain_pending(self) -> None:
        if not self.pending or self.busy or self.state not in (State.CATCHING_UP, State.LIVE):
            return
        self._purge_pending()
        outbox = self.owner.outbox
        while self.pending and outbox.room() > 0:
            frame = self.pending.pop(self.last_sent + 1, None)
            if frame is None:
                break
            self._emit(frame)

    def _enter_replay(self) -> None:
        if not self.replaying and self.gate is not None:
            self.replaying = True
            self.gate.active += 1

    def _leave_replay(self) -> None:
        if self.replaying and self.gate is not None:
            self.replaying = False
            self.gate.active -= 1

    def _go_live(self) -> None:
        self.state = State.LIVE
        self._leave_replay()
        elapsed = time.monotonic() - self._started_at
        self.stats.replay_seconds_total += elapsed
        metrics.REPLAY_SECONDS.observe(elapsed)
        self.owner.outbox.push(
            self.lane,
            ws_pb2.ServerMessage(
                watermark=ws_pb2.Watermark(topic=self.topic, seq=self.last_sent, live=True)
            ),
        )
