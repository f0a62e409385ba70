"""Property test of the gateway's per-(socket, topic) delivery state machine
(`khala_gateway.usecases.subscription.Subscription`; quick, part of `make test`).

Hypothesis drives one subscription through any interleaving of: frames committed
to the topic log whose broker message is delivered, lost, duplicated or
reordered; head polls; the feeder's Postgres steps (replay, gap fill, snapshot
chunks), including steps *suspended at their Postgres read* while live frames
and polls arrive (the concurrency of the real event loop); and the sender
draining a bounded outbox at any moment. Whatever the interleaving, once the
broker messages are all in and the feeder has settled, the socket must have been
handed exactly the frames after the cursor (or the snapshot, then the frames
after it), each once, in order, with the stored bytes, and one live Watermark.

The topic log here is an in-memory stand-in holding rows by seq; the gateway's
integration tests run the same code against real Postgres and RabbitMQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khala_gateway.domain.cursor import Stale, StartPlan, TopicHead
from khala_gateway.domain.outbox import Lane, Outbox
from khala_gateway.domain.wire import WireFrame
from khala_gateway.metrics import TopicStats
from khala_gateway.usecases.subscription import Subscription
from openagents.sync.v1 import frames_pb2, ws_pb2

TOPIC = "org.acme.run.r1"
EPOCH = "1"


class GatedLog:
    """Rows by seq; every read first passes `gate`, which a test can hold shut."""

    def __init__(self) -> None:
        self.rows: dict[int, bytes] = {}
        self.keys: dict[int, str] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    def append(self, key: str) -> WireFrame:
        seq = len(self.rows) + 1
        data = frames_pb2.KhalaFrame(
            topic=TOPIC, seq=seq, epoch=EPOCH, kind=frames_pb2.FRAME_KIND_DOC_UPSERT, key=key,
            payload_bytes=f"{key}@{seq}".encode(),
        ).SerializeToString()
        self.rows[seq] = data
        self.keys[seq] = key
        return WireFrame(seq, EPOCH, data)

    def head_now(self) -> TopicHead:
        return TopicHead(EPOCH, len(self.rows), 1 if self.rows else 0)

    def latest_per_key(self, as_of: int) -> list[int]:
        latest: dict[str, int] = {}
        for seq in range(1, as_of + 1):
            latest[self.keys[seq]] = seq
        return sorted(latest.values())

    async def _pass(self) -> None:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1

    async def head(self, topic: str) -> TopicHead:
        await self._pass()
        return self.head_now()

    async def frames_after(self, topic: str, epoch: str, after: int, upto: int, limit: int) -> list[tuple[int, bytes]]:
        await self._pass()
        seqs = [s for s in range(after + 1, upto + 1) if s in self.rows][:limit]
        return [(s, self.rows[s]) for s in seqs]

    async def frames_by_seq(self, topic: str, epoch: str, seqs: Sequence[int]) -> list[tuple[int, bytes]]:
        await self._pass()
        return [(s, self.rows[s]) for s in sorted(seqs) if s in self.rows]

    async def read_start(
        self, topic: str, plan: Callable[[TopicHead], StartPlan | Stale]
    ) -> tuple[TopicHead, StartPlan | Stale, list[int]]:
        head = self.head_now()
        return head, plan(head), []


class Owner:
    """The connection side: a bounded outbox and, when `direct`, the live frames
    taken for the next flush (written before the outbox, as Connection does)."""

    def __init__(self, max_frames: int, direct: bool = False) -> None:
        self.outbox = Outbox(max_frames, 10**9)
        self.direct = direct
        self.live: list[WireFrame] = []
        self.sent: list[ws_pb2.ServerMessage | WireFrame] = []

    def frames_queued(self) -> None:
        pass

    def offer_live(self, lane: Lane, frame: WireFrame) -> bool:
        if not self.direct or self.outbox or len(self.live) >= self.outbox.max_frames:
            return False
        self.live.append(frame)
        return True

    def needs_feed(self, sub: Subscription) -> None:
        pass

    def feed_later(self, delay_s: float) -> None:
        pass

    def drain(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.sent.extend(self.live)
            self.live.clear()
            if not self.outbox:
                return
            for item in self.outbox.take_round(256, 10**9):
                self.sent.extend(item if isinstance(item, list) else [item])


@dataclass(frozen=True)
class Setup:
    existing: int  # frames committed before the subscription starts
    keys: int  # distinct doc keys (snapshot mode compacts to the latest per key)
    snapshot: bool  # a fresh doc-topic subscription (snapshot, then continuation)
    after: int  # resume cursor (event mode); clipped to existing
    outbox_frames: int
    chunk: int
    direct: bool  # the socket's sender is idle: in-order live frames skip the outbox


setups = st.builds(
    Setup,
    existing=st.integers(0, 25),
    keys=st.integers(1, 6),
    snapshot=st.booleans(),
    after=st.integers(0, 25),
    outbox_frames=st.sampled_from([1, 2, 3, 5, 1000]),
    chunk=st.integers(1, 8),
    direct=st.booleans(),
)
# (action, number, flag); the name list is weighted towards commits and deliveries.
ACTIONS = ["commit"] * 3 + ["deliver"] * 4 + ["step", "suspend", "suspend", "resume", "poll", "drain", "drain"]
actions = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(0, 50), st.booleans()), min_size=5, max_size=80
)


async def _yield(times: int = 5) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def _drive(setup: Setup, script: list[tuple[str, int, bool]]) -> tuple[GatedLog, Owner, int, list[int]]:
    log, owner = GatedLog(), Owner(setup.outbox_frames, setup.direct)
    for i in range(setup.existing):
        log.append(f"k{i % setup.keys}")
    sub = Subscription(owner, TOPIC, Lane(TOPIC), TopicStats(TOPIC), max_pending=8)
    in_flight: list[WireFrame] = []
    head = log.head_now()
    after = min(setup.after, head.head_seq)
    if setup.snapshot:
        snapshot = log.latest_per_key(head.head_seq)
        sub.begin(head, StartPlan(True, head.head_seq), snapshot)
        start_after = head.head_seq
    else:
        snapshot = []
        sub.begin(head, StartPlan(False, after), [])
        start_after = after
    stepping: asyncio.Task[object] | None = None
    counter = 0

    for action, number, flag in script:
        if action == "commit":
            counter += 1
            frame = log.append(f"k{counter % setup.keys}")
            if not (flag and number % 4 == 0):  # about one broker message in eight is lost
                in_flight.append(frame)
        elif action == "deliver" and in_flight:
            frame = in_flight.pop(number % len(in_flight))  # any order
            sub.on_live(frame)
            if flag and number % 3 == 0:  # redelivered
                sub.on_live(frame)
        elif action == "step" and stepping is None:
            await sub.step(log, setup.chunk, now=1e9)  # type: ignore[arg-type]
        elif action == "suspend" and stepping is None:
            log.gate.clear()
            stepping = asyncio.create_task(sub.step(log, setup.chunk, now=1e9))  # type: ignore[arg-type]
            await _yield()
        elif action == "resume" and stepping is not None:
            log.gate.set()
            await stepping
            stepping = None
        elif action == "poll":
            sub.on_head(log.head_now())
        elif action == "drain":
            owner.drain(1 + number % 3)
    if stepping is not None:
        log.gate.set()
        await stepping
    # Settle: every broker message arrives (late), two head polls, the feeder and
    # the sender run until nothing is left to do.
    for frame in in_flight:
        sub.on_live(frame)
    sub.on_head(log.head_now())
    sub.on_head(log.head_now())
    for _ in range(10_000):
        owner.drain(10)
        if not sub.needs_work() and not owner.outbox and not owner.live:
            break
        outcome = await sub.step(log, setup.chunk, now=1e9)  # type: ignore[arg-type]
        assert outcome.end_with is None, outcome.end_with
    else:
        raise AssertionError("the subscription never settled")
    return log, owner, start_after, snapshot


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups, actions)
def test_any_interleaving_delivers_exactly_the_log_after_the_cursor(
    setup: Setup, script: list[tuple[str, int, bool]]
) -> None:
    log, owner, start_after, snapshot = asyncio.run(_drive(setup, script))
    head = len(log.rows)
    frames = [i for i in owner.sent if isinstance(i, WireFrame)]
    markers = [i.WhichOneof("body") for i in owner.sent if isinstance(i, ws_pb2.ServerMessage)]
    expected = snapshot + list(range(start_after + 1, head + 1))
    assert [f.seq for f in frames] == expected
    assert all(f.data == log.rows[f.seq] for f in frames)  # the stored bytes, unchanged
    assert markers.count("watermark") == 1
    watermark = next(i for i in owner.sent if isinstance(i, ws_pb2.ServerMessage) and i.HasField("watermark"))
    assert watermark.watermark.live and watermark.watermark.seq <= head
    if setup.snapshot:
        assert markers[:2] == ["snapshot_begin", "snapshot_end"]
        begin = owner.sent.index(next(i for i in owner.sent if isinstance(i, ws_pb2.ServerMessage)))
        assert begin == 0  # nothing precedes SnapshotBegin
