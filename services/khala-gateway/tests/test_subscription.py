"""Unit tests of the subscription state machine against an in-memory topic log.

The log here is a plain in-memory stand-in for the storage interface (no
Postgres semantics are imitated beyond "rows by seq"); the integration tests
run the same code against real Postgres and RabbitMQ.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Stale, StartPlan, TopicHead
from khala_gateway.domain.outbox import Lane, Outbox
from khala_gateway.domain.wire import WireFrame
from khala_gateway.metrics import TopicStats
from khala_gateway.usecases.subscription import State, Subscription
from openagents.sync.v1 import frames_pb2, ws_pb2

TOPIC = "org.acme.run.r1"


class MemoryLog:
    """Rows by seq for one topic; `reads` counts range reads."""

    def __init__(self, epoch: str = "1") -> None:
        self.epoch = epoch
        self.rows: dict[int, bytes] = {}
        self.oldest = 0
        self.reads = 0

    def append(
        self, kind: frames_pb2.FrameKind = frames_pb2.FRAME_KIND_EVENT, key: str = ""
    ) -> WireFrame:
        seq = max(self.rows, default=0) + 1
        data = frames_pb2.KhalaFrame(
            topic=TOPIC, seq=seq, epoch=self.epoch, kind=kind, key=key or f"k{seq}"
        ).SerializeToString()
        self.rows[seq] = data
        self.oldest = self.oldest or seq
        return WireFrame(seq, self.epoch, data)

    def head_now(self) -> TopicHead:
        return TopicHead(self.epoch, max(self.rows, default=0), self.oldest)

    async def head(self, topic: str) -> TopicHead:
        return self.head_now()

    async def frames_after(
        self, topic: str, epoch: str, after: int, upto: int, limit: int
    ) -> list[tuple[int, bytes]]:
        self.reads += 1
        seqs = sorted(s for s in self.rows if after < s <= upto and epoch == self.epoch)
        return [(s, self.rows[s]) for s in seqs[:limit]]

    async def frames_by_seq(
        self, topic: str, epoch: str, seqs: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        return [(s, self.rows[s]) for s in sorted(seqs) if s in self.rows]

    async def read_start(
        self, topic: str, plan: Callable[[TopicHead], StartPlan | Stale]
    ) -> tuple[TopicHead, StartPlan | Stale, list[int]]:
        head = self.head_now()
        return head, plan(head), []


class Owner:
    def __init__(self, max_frames: int = 10_000) -> None:
        self.outbox = Outbox(max_frames, 10**9)
        self.feeds = 0

    def frames_queued(self) -> None:
        pass

    def offer_live(self, lane: Lane, frame: WireFrame) -> bool:
        return False

    def needs_feed(self, sub: Subscription) -> None:
        self.feeds += 1

    def feed_later(self, delay_s: float) -> None:
        pass

    def drain(self) -> list[ws_pb2.ServerMessage | WireFrame]:
        out: list[ws_pb2.ServerMessage | WireFrame] = []
        while self.outbox:
            for item in self.outbox.take_round(1000, 10**9):
                out.extend(item if isinstance(item, list) else [item])
        return out


def make(owner: Owner) -> Subscription:
    return Subscription(owner, TOPIC, Lane(TOPIC), TopicStats(TOPIC), max_pending=64)


async def run_feeder(sub: Subscription, log: MemoryLog, chunk: int = 7) -> None:
    for _ in range(10_000):
        if not sub.needs_work():
            return
        outcome = await sub.step(log, chunk, now=1e9)  # type: ignore[arg-type]
        assert outcome.end_with is None
        if not outcome.progressed:
            return


def frame_seqs(items: list[ws_pb2.ServerMessage | WireFrame]) -> list[int]:
    return [i.seq for i in items if isinstance(i, WireFrame)]


async def test_replay_then_live_handover_with_frames_arriving_during_replay() -> None:
    log, owner = MemoryLog(), Owner()
    for _ in range(20):
        log.append()
    sub = make(owner)
    sub.on_live(log.append())  # 21 arrives before the head is read: buffered
    sub.begin(log.head_now(), StartPlan(False, 0), [])
    assert sub.state is State.CATCHING_UP
    sub.on_live(log.append())  # 22 during replay: buffered, not sent
    assert frame_seqs(owner.drain()) == []
    await run_feeder(sub, log)
    out = owner.drain()
    assert frame_seqs(out) == list(range(1, 23))
    assert isinstance(out[-1], ws_pb2.ServerMessage)
    assert out[-1].watermark == ws_pb2.Watermark(topic=TOPIC, seq=22, live=True)
    assert sub.state is State.LIVE
    sub.on_live(log.append())  # live, in order: sent at once without the feeder
    assert frame_seqs(owner.drain()) == [23]


async def test_duplicates_are_dropped_and_gaps_filled_from_the_log() -> None:
    log, owner = MemoryLog(), Owner()
    sub = make(owner)
    sub.begin(log.head_now(), StartPlan(False, 0), [])
    await run_feeder(sub, log)
    owner.drain()
    f1, f2, f3, f4 = (log.append() for _ in range(4))
    sub.on_live(f1)
    sub.on_live(f1)  # duplicate
    sub.on_live(f3)  # gap: 2 was never delivered
    assert frame_seqs(owner.drain()) == [1]
    await run_feeder(sub, log)
    sub.on_live(f2)  # the lost one shows up late: duplicate now
    sub.on_live(f4)
    assert frame_seqs(owner.drain()) == [2, 3, 4]
    assert sub.stats.drops == 2


async def test_head_poll_catches_a_lost_last_frame_on_the_second_look() -> None:
    log, owner = MemoryLog(), Owner()
    sub = make(owner)
    sub.begin(log.head_now(), StartPlan(False, 0), [])
    await run_feeder(sub, log)
    owner.drain()
    log.append()  # committed, its broker message lost
    sub.on_head(log.head_now())  # first sighting: might still be in flight
    assert not sub.needs_work()
    sub.on_head(log.head_now())  # still missing a poll later: read it
    assert sub.needs_work()
    await run_feeder(sub, log)
    assert frame_seqs(owner.drain()) == [1]


async def test_snapshot_then_continuation() -> None:
    log, owner = MemoryLog(), Owner()
    for _ in range(5):
        log.append(frames_pb2.FRAME_KIND_DOC_UPSERT)
    sub = make(owner)
    sub.begin(log.head_now(), StartPlan(True, 5), [2, 4, 5])
    sub.on_live(log.append())  # 6 arrives during the snapshot
    await run_feeder(sub, log)
    out = owner.drain()
    bodies = [i.WhichOneof("body") if isinstance(i, ws_pb2.ServerMessage) else i.seq for i in out]
    assert bodies == ["snapshot_begin", 2, 4, 5, "snapshot_end", 6, "watermark"]
    assert out[0].snapshot_begin.as_of_seq == 5  # type: ignore[union-attr]


async def test_epoch_change_while_subscribed_ends_with_stale_cursor() -> None:
    log, owner = MemoryLog(), Owner()
    log.append()
    sub = make(owner)
    sub.begin(log.head_now(), StartPlan(False, 0), [])
    await run_feeder(sub, log)
    log.epoch, log.rows, log.oldest = "2", {}, 0
    sub.on_live(log.append())
    outcome = await sub.step(log, 10, now=1e9)  # type: ignore[arg-type]
    assert outcome.end_with is not None
    assert (outcome.end_with.code, outcome.end_with.reason) == (
        codes.STALE_CURSOR,
        codes.EPOCH_CHANGED,
    )


async def test_frames_removed_by_retention_during_replay_end_with_retention() -> None:
    log, owner = MemoryLog(), Owner()
    for _ in range(10):
        log.append()
    sub = make(owner)
    sub.begin(log.head_now(), StartPlan(False, 2), [])
    for seq in range(1, 7):
        del log.rows[seq]
    log.oldest = 7
    outcome = await sub.step(log, 100, now=1e9)  # type: ignore[arg-type]
    assert outcome.end_with is not None and outcome.end_with.reason == codes.RETENTION


async def test_full_send_queue_leaves_frames_in_the_log_until_there_is_room() -> None:
    log, owner = MemoryLog(), Owner(max_frames=3)
    sub = make(owner)
    sub.begin(log.head_now(), StartPlan(False, 0), [])
    await run_feeder(sub, log)
    for _ in range(10):
        sub.on_live(log.append())
    got = frame_seqs(owner.drain())
    while sub.needs_work():
        await run_feeder(sub, log)
        got += frame_seqs(owner.drain())
    assert got == list(range(1, 11))


async def random_action(
    rng: random.Random, log: MemoryLog, owner: Owner, sub: Subscription, in_flight: list[WireFrame]
) -> list[int]:
    """One random step of the broker, the feeder, the head poll or the socket; seqs sent."""
    action = rng.random()
    if action < 0.4:
        frame = log.append()
        if rng.random() > 0.2:  # 20% of broker messages are lost
            in_flight.append(frame)
    elif action < 0.7 and in_flight:
        frame = in_flight.pop(rng.randrange(len(in_flight)))  # any order
        sub.on_live(frame)
        if rng.random() < 0.2:
            sub.on_live(frame)  # redelivered
    elif action < 0.85:
        await sub.step(log, rng.randint(1, 10), now=1e9)  # type: ignore[arg-type]
    elif action < 0.9:
        sub.on_head(log.head_now())
    else:
        return frame_seqs(owner.drain())
    return []


async def settle(
    rng: random.Random, log: MemoryLog, owner: Owner, sub: Subscription, in_flight: list[WireFrame]
) -> list[int]:
    """Deliver what is in flight, then poll and feed until nothing is left; seqs sent."""
    got: list[int] = []
    for frame in in_flight:
        sub.on_live(frame)
    for _ in range(3):
        sub.on_head(log.head_now())
        while sub.needs_work():
            await run_feeder(sub, log, chunk=rng.randint(1, 10))
            got += frame_seqs(owner.drain())
    return got + frame_seqs(owner.drain())


async def test_random_interleavings_never_duplicate_or_gap() -> None:
    rng = random.Random(7)
    for _ in range(200):
        log, owner = MemoryLog(), Owner(max_frames=rng.choice([2, 5, 1000]))
        for _ in range(rng.randint(0, 30)):
            log.append()
        after = rng.randint(0, max(log.rows, default=0))
        sub = make(owner)
        in_flight: list[WireFrame] = []
        sub.begin(log.head_now(), StartPlan(False, after), [])
        got: list[int] = []
        for _ in range(rng.randint(10, 80)):
            got += await random_action(rng, log, owner, sub, in_flight)
        got += await settle(rng, log, owner, sub, in_flight)
        assert got == list(range(after + 1, max(log.rows, default=0) + 1))
