"""A connection's bounded send queue, served round-robin across its topics.

Ordering: each topic has one FIFO lane, so the frames and markers of a topic
leave in the order they were queued; connection-level messages (Subscribed,
errors, heartbeats) leave before any lane content queued after them. The bound
counts frames and frame bytes; producers ask `room()` first and leave frames in
Postgres when it is zero (they are read again later), so the queue itself never
holds more than its bound. Connection-level messages count against the byte
bound too (`control_bytes`): they cannot be left in Postgres, so a client that
provokes replies and never reads reaches the bound like one that reads frames
too slowly. Being at the bound longer than a grace makes the socket a slow
consumer (the connection evicts at once past a hard cap, see usecases/send_buffer.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from khala_gateway.domain.wire import WireFrame
from openagents.sync.v1 import ws_pb2

Item = WireFrame | ws_pb2.ServerMessage


def _proto_cost(frame: WireFrame) -> int:
    """Bytes a frame adds to a `khala.v1+proto` batch (tag, varint length, data)."""
    return len(frame.data) + 6


Outgoing = ws_pb2.ServerMessage | list[WireFrame]


@dataclass(eq=False)
class Lane:
    """One topic's FIFO of frames and in-band markers (SnapshotBegin/End, Watermark)."""

    topic: str
    items: deque[Item] = field(default_factory=deque)
    in_ring: bool = False
    closed: bool = False


class Outbox:
    """Per-connection send queue with a frames/bytes bound and round-robin draining."""

    def __init__(
        self,
        max_frames: int,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = 0
        self.bytes = 0
        self.saturated_since: float | None = None
        self.control_bytes = 0  # encoded size of the queued connection-level messages
        self._clock = clock
        self._control: deque[ws_pb2.ServerMessage] = deque()
        self._ring: deque[Lane] = deque()

    def __bool__(self) -> bool:
        return bool(self._control) or bool(self._ring)

    def room(self) -> int:
        """How many more frames may be queued now (0 at the bound)."""
        if self.bytes >= self.max_bytes:
            return 0
        return max(0, self.max_frames - self.frames)

    def push_control(self, message: ws_pb2.ServerMessage) -> None:
        """Queue a connection-level message; its size counts against the byte bound."""
        self._control.append(message)
        size = message.ByteSize() + 8  # + WebSocket and oneof framing
        self.control_bytes += size
        self.bytes += size
        if self.saturated_since is None and self.bytes >= self.max_bytes:
            self.saturated_since = self._clock()

    def push(self, lane: Lane, item: Item) -> None:
        """Queue a frame or in-band marker on a topic's lane."""
        if lane.closed:
            return
        lane.items.append(item)
        if isinstance(item, WireFrame):
            self.frames += 1
            self.bytes += len(item.data)
            if self.saturated_since is None and (
                self.frames >= self.max_frames or self.bytes >= self.max_bytes
            ):
                self.saturated_since = self._clock()
        if not lane.in_ring:
            lane.in_ring = True
            self._ring.append(lane)

    def push_front(self, lane: Lane, frames: list[WireFrame]) -> None:
        """Put frames back at the head of a lane, ahead of what was queued after them."""
        if lane.closed or not frames:
            return
        lane.items.extendleft(reversed(frames))
        self.frames += len(frames)
        self.bytes += sum(len(frame.data) for frame in frames)
        self._update_saturation()
        if not lane.in_ring:
            lane.in_ring = True
            self._ring.append(lane)

    def discard(self, lane: Lane) -> None:
        """Drop a lane's queued content (its subscription ended)."""
        lane.closed = True
        for item in lane.items:
            if isinstance(item, WireFrame):
                self.frames -= 1
                self.bytes -= len(item.data)
        lane.items.clear()
        self._update_saturation()

    def saturated_for(self) -> float:
        """Seconds the queue has been at its bound (0 when below it)."""
        if self.saturated_since is None:
            return 0.0
        return self._clock() - self.saturated_since

    def take_round(
        self,
        quantum: int,
        max_message_bytes: int,
        cost: Callable[[WireFrame], int] = _proto_cost,
        overhead: int = 0,
    ) -> list[Outgoing]:
        """Everything to send next, in order: control messages, then up to
        `quantum` items per topic in round-robin order, frames coalesced into
        batches whose encoding is at most `max_message_bytes`: a batch costs
        `overhead` plus `cost(frame)` per frame (the codec's bounds; a single
        frame larger than the limit goes alone)."""
        out: list[Outgoing] = list(self._control)
        self._control.clear()
        self.bytes -= self.control_bytes
        self.control_bytes = 0
        budget = max_message_bytes - overhead
        batch: list[WireFrame] = []
        batch_bytes = 0
        for _ in range(len(self._ring)):
            lane = self._ring.popleft()
            taken = 0
            while lane.items and taken < quantum:
                item = lane.items[0]
                if isinstance(item, WireFrame):
                    size = cost(item)
                    if batch and batch_bytes + size > budget:
                        out.append(batch)
                        batch, batch_bytes = [], 0
                    batch.append(item)
                    batch_bytes += size
                    self.frames -= 1
                    self.bytes -= len(item.data)
                else:
                    if batch:
                        out.append(batch)
                        batch, batch_bytes = [], 0
                    out.append(item)
                lane.items.popleft()
                taken += 1
            if lane.items and not lane.closed:
                self._ring.append(lane)
            else:
                lane.in_ring = False
        if batch:
            out.append(batch)
        self._update_saturation()
        return out

    def _update_saturation(self) -> None:
        if self.room() > 0:
            self.saturated_since = None
        elif self.saturated_since is None:
            self.saturated_since = self._clock()
