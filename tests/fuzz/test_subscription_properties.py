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
            topic=TOPIC,
            seq=seq,
            epoch=EPOCH,
            kind=frames_pb2.FRAME_KIND_DOC_UPSERT,
            key=key,
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

    async def frames_after(
        self, topic: str, epoch: str, after: int, upto: int, limit: int
    ) -> list[tuple[int, bytes]]:
        await self._pass()
        seqs = [s for s in range(after + 1, upto + 1) if s in self.rows][:limit]
        return [(s, self.rows[s]) for s in seqs]

    async def frames_by_seq(
        self, topic: str, epoch: str, seqs: Sequence[int]
    ) -> list[tuple[int, bytes]]:
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
ACTIONS = (
    ["commit"] * 3
    + ["deliver"] * 4
    + ["step", "suspend", "suspend", "resume", "poll", "drain", "drain"]
)
actions = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(0, 50), st.booleans()), min_size=5, max_size=80
)


async def _yield(times: int = 5) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


class Driver:
    """One subscription driven by a script: the topic log, the broker messages in
    flight, and at most one feeder step suspended at its Postgres read."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.log, self.owner = GatedLog(), Owner(setup.outbox_frames, setup.direct)
        for i in range(setup.existing):
            self.log.append(f"k{i % setup.keys}")
        self.sub = Subscription(self.owner, TOPIC, Lane(TOPIC), TopicStats(TOPIC), max_pending=8)
        self.in_flight: list[WireFrame] = []
        self.stepping: asyncio.Task[object] | None = None
        self.counter = 0

    def begin(self) -> tuple[int, list[int]]:
        """Start the subscription (snapshot, or from the clipped cursor): the seq it
        starts after and the snapshot's seqs."""
        head = self.log.head_now()
        after = min(self.setup.after, head.head_seq)
        if self.setup.snapshot:
            snapshot = self.log.latest_per_key(head.head_seq)
            self.sub.begin(head, StartPlan(True, head.head_seq), snapshot)
            return head.head_seq, snapshot
        self.sub.begin(head, StartPlan(False, after), [])
        return after, []

    async def act(self, action: str, number: int, flag: bool) -> None:
        """One scripted event (an action that does not apply now is skipped)."""
        if action == "commit":
            self._commit(number, flag)
        elif action == "deliver" and self.in_flight:
            self._deliver(number, flag)
        elif action == "step" and self.stepping is None:
            await self.sub.step(self.log, self.setup.chunk, now=1e9)  # type: ignore[arg-type]
        elif action == "suspend" and self.stepping is None:
            self.log.gate.clear()
            self.stepping = asyncio.create_task(self.sub.step(self.log, self.setup.chunk, now=1e9))  # type: ignore[arg-type]
            await _yield()
        elif action == "resume" and self.stepping is not None:
            await self._resume()
        elif action == "poll":
            self.sub.on_head(self.log.head_now())
        elif action == "drain":
            self.owner.drain(1 + number % 3)

    def _commit(self, number: int, flag: bool) -> None:
        self.counter += 1
        frame = self.log.append(f"k{self.counter % self.setup.keys}")
        if not (flag and number % 4 == 0):  # about one broker message in eight is lost
            self.in_flight.append(frame)

    def _deliver(self, number: int, flag: bool) -> None:
        frame = self.in_flight.pop(number % len(self.in_flight))  # any order
        self.sub.on_live(frame)
        if flag and number % 3 == 0:  # redelivered
            self.sub.on_live(frame)

    async def _resume(self) -> None:
        assert self.stepping is not None
        self.log.gate.set()
        await self.stepping
        self.stepping = None

    async def settle(self) -> None:
        """Every broker message arrives (late), two head polls, the feeder and the
        sender run until nothing is left to do."""
        if self.stepping is not None:
            await self._resume()
        for frame in self.in_flight:
            self.sub.on_live(frame)
        self.sub.on_head(self.log.head_now())
        self.sub.on_head(self.log.head_now())
        for _ in range(10_000):
            self.owner.drain(10)
            if not self.sub.needs_work() and not self.owner.outbox and not self.owner.live:
                return
            outcome = await self.sub.step(self.log, self.setup.chunk, now=1e9)  # type: ignore[arg-type]
            assert outcome.end_with is None, outcome.end_with
        raise AssertionError("the subscription never settled")


async def _drive(
    setup: Setup, script: list[tuple[str, int, bool]]
) -> tuple[GatedLog, Owner, int, list[int]]:
    driver = Driver(setup)
    start_after, snapshot = driver.begin()
    for action, number, flag in script:
        await driver.act(action, number, flag)
    await driver.settle()
    return driver.log, driver.owner, start_after, snapshot


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
    watermark = next(
        i for i in owner.sent if isinstance(i, ws_pb2.ServerMessage) and i.HasField("watermark")
    )
    assert watermark.watermark.live and watermark.watermark.seq <= head
    if setup.snapshot:
        assert markers[:2] == ["snapshot_begin", "snapshot_end"]
        begin = owner.sent.index(next(i for i in owner.sent if isinstance(i, ws_pb2.ServerMessage)))
        assert begin == 0  # nothing precedes SnapshotBegin
