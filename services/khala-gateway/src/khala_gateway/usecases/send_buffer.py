"""One socket's send buffer: the bounded outbox, its sender task, the direct-write
fast path, slow-consumer eviction and the close that follows the last write.

The *sender* drains the bounded outbox round-robin across topics into as few
WebSocket messages as possible (one `frame`/`frames` message per round, markers
and errors as their own messages). It is owned here and cancelled by
`_stop_sending`.

Fast path: while the sender is idle (not in the middle of a round), newly
queued content is written by the process's FlushQueue instead of waking the
sender: once per event-loop turn it takes each touched socket's round and
writes it as complete WebSocket messages in one synchronous transport write.
The next in-order live frame of a topic does not even enter the outbox while
it is empty: `offer_live` keeps it in a short list the flush writes first
(each frame as its single-frame message, built once per codec for every
socket). Only one of the two writers runs at any time (the flush never runs
while the sender is between taking a round and finishing its writes), so each
topic's messages leave in queue order either way; a socket whose transport is
over its write buffer limit is left to the sender, which waits for the drain
(live frames not yet written go back to the head of their lanes).

Bound: the outbox holds at most `send_queue_frames` / `send_queue_bytes` of
frames; connection-level replies past the hard cap evict the socket at once,
and the hub evicts a socket saturated for longer than the slow-consumer grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from khala_common.logs import get_logger
from khala_gateway import metrics
from khala_gateway.domain import codes
from khala_gateway.domain.limits import Limits, hard_cap
from khala_gateway.domain.outbox import Lane, Outbox
from khala_gateway.domain.wire import Codec, WireFrame, error_message
from openagents.sync.v1 import ws_pb2

log = get_logger("khala_gateway.connection")

SEND_QUANTUM = 256  # frames per topic per sender round
CLOSE_TIMEOUT_S = 2.0  # per final write / close handshake
FLUSH_TIMEOUT_S = 0.5  # queued content before a (non slow-consumer) close
CLOSE_BUDGET_S = 5.0  # after this the connection is aborted
INTERNAL_RETRY_MS = 1_000


class DirectWriter(Protocol):
    """Synchronous access to a socket's transport, for complete WebSocket messages."""

    def writable(self) -> bool:
        """Whether the transport is open and under its write buffer limit."""
        ...

    def write(self, data: bytes) -> None:
        """Hand `data` to the transport (it buffers what the kernel does not take)."""
        ...

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its limit (or the socket is gone)."""
        ...


class FlushQueue:
    """Sockets with newly queued content, written in one pass per event-loop turn."""

    def __init__(self) -> None:
        self._dirty: dict[SendBuffer, None] = {}
        self._scheduled = False

    def add(self, conn: SendBuffer) -> None:
        """Write `conn`'s queue on this loop turn's flush."""
        self._dirty[conn] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write every touched socket's queue (sockets that cannot take it wake their sender)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            conn.flush()


@dataclass(frozen=True)
class _ClosePlan:
    code: int
    final: list[ws_pb2.ServerMessage]
    reason: str
    flush_until: float | None  # monotonic deadline for queued content; None: no flush


async def bounded(awaitable: Awaitable[object], timeout_s: float) -> bool:
    """Await with a timeout; False on timeout or failure. A CancelledError that is
    not aimed at the current task (aiohttp shares one drain future between
    writers) counts as a failure too."""
    try:
        await asyncio.wait_for(awaitable, timeout_s)
        return True
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return False
    except Exception:
        return False


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a task of this connection and wait for it to end."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class SendBuffer:
    """The outbox of one socket, its writers and its close."""

    def __init__(
        self,
        connection_id: str,
        codec: Codec,
        send: Callable[[bytes | str], Awaitable[None]],
        close_socket: Callable[[int, str], Awaitable[object]],
        abort: Callable[[], None],
        limits: Limits,
        *,
        direct: DirectWriter | None = None,
        flushes: FlushQueue | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.codec = codec
        self.limits = limits
        self.outbox = Outbox(limits.send_queue_frames, limits.send_queue_bytes)
        self.closing = False
        self._send = send
        self._direct = direct
        self._flushes = flushes if direct is not None else None
        self._sender_busy = True  # until the sender first waits for work
        # In-order live frames for the next flush, queued while the outbox was
        # empty, and their lanes (parallel lists: no allocation per frame).
        self._live: list[WireFrame] = []
        self._live_lanes: list[Lane] = []
        self._close_socket = close_socket
        self._abort = abort
        self._send_ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._close_plan: _ClosePlan | None = None

    # -- hooks of the connection ---------------------------------------------

    def _round_taken(self) -> None:
        """A round left the outbox, so there is room again (the connection feeds)."""

    async def _stop_feeding(self) -> None:
        """Before the close is written: stop reading Postgres (the connection's feeder)."""

    # -- lifecycle ---------------------------------------------------------

    def _start_sender(self, first: ws_pb2.ServerMessage) -> None:
        """Queue `first` (Welcome) and start the sender."""
        self.outbox.push_control(first)
        self._sender = asyncio.create_task(
            self._guard(self._send_loop()), name=f"send-{self.connection_id}"
        )
        self._send_ready.set()

    def request_close(
        self,
        code: int,
        final: Sequence[ws_pb2.ServerMessage] = (),
        *,
        reason: str = "",
        flush: bool = True,
    ) -> None:
        """Close with `code` after `final` messages; idempotent.

        The sender performs the close after the write in progress, so no write
        is ever interrupted. With `flush`, what is already queued gets a short
        time to go out first; a slow consumer gets no flush. A peer that does
        not take the close within the budget has its connection aborted.
        """
        if self.closing:
            return
        self.closing = True
        metrics.CLOSES.labels(str(code)).inc()
        deadline = time.monotonic() + FLUSH_TIMEOUT_S if flush else None
        self._close_plan = _ClosePlan(code, list(final), reason, deadline)
        self._closer = asyncio.create_task(self._close(self._close_plan))

    def evict_slow(self, message: str) -> None:
        """Close as a slow consumer, without flushing what is queued."""
        metrics.SLOW_CONSUMER_EVICTIONS.inc()
        self.request_close(
            codes.CLOSE_SLOW_CONSUMER,
            [error_message(codes.SLOW_CONSUMER, message)],
            reason="slow consumer",
            flush=False,
        )

    async def _close(self, plan: _ClosePlan) -> None:
        await self._stop_feeding()  # no new Postgres reads; the feeder never writes
        sender = self._sender
        if sender is not None and not sender.done():
            self._send_ready.set()
            done, _ = await asyncio.wait({sender}, timeout=CLOSE_BUDGET_S)
            closed = bool(done)
        else:
            closed = await self._write_close(plan)
        if not closed:
            self._abort()
        log.info(
            "connection closed",
            connection_id=self.connection_id,
            code=plan.code,
            reason=plan.reason,
            aborted=not closed,
        )

    async def _write_close(self, plan: _ClosePlan) -> bool:
        """Send the final messages and the close frame; False if the peer did not take them."""
        for message in plan.final:
            if message.HasField("error"):
                metrics.ERRORS_SENT.labels(message.error.code).inc()
            if not await bounded(self._send(self.codec.encode(message)), CLOSE_TIMEOUT_S):
                return False
        return await bounded(self._close_socket(plan.code, plan.reason), CLOSE_TIMEOUT_S)

    async def _guard(self, loop: Awaitable[None]) -> None:
        """Run a connection task; if it fails, close the socket instead of stalling it."""
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:  # the peer went away; the reader sees it too
            log.debug("socket write failed", connection_id=self.connection_id, error=repr(exc))
            self.closing = True
            self._abort()
        except Exception:
            log.exception("connection task failed", connection_id=self.connection_id)
            self.request_close(
                codes.CLOSE_INTERNAL,
                [
                    error_message(
                        codes.INTERNAL,
                        "internal error; reconnect from your cursors",
                        retry_after_ms=INTERNAL_RETRY_MS,
                    )
                ],
                reason="internal error",
                flush=False,
            )

    async def _finish_close(self) -> None:
        """Let a requested close complete (bounded); no close is started here."""
        self.closing = True
        if self._closer is not None:
            await bounded(asyncio.shield(self._closer), CLOSE_BUDGET_S + CLOSE_TIMEOUT_S)

    async def _stop_sending(self) -> None:
        """Cancel and await the sender."""
        await cancel_task(self._sender)

    # -- queueing (the Owner protocol of subscriptions) -----------------------

    def frames_queued(self) -> None:
        """Something was queued: have it flushed this loop turn, or wake the sender."""
        if self._flushes is not None and not self._sender_busy and self._close_plan is None:
            self._flushes.add(self)
        else:
            self._send_ready.set()

    def offer_live(self, lane: Lane, frame: WireFrame) -> bool:
        """Take the next in-order live frame of `lane` for this loop turn's flush;
        False (the caller queues it) unless the socket is idle with an empty outbox."""
        live = self._live
        if (
            self._flushes is None
            or self._sender_busy
            or self._close_plan is not None
            or self.outbox
            or len(live) >= self.limits.send_queue_frames
        ):
            return False
        if not live:
            self._flushes.add(self)
        live.append(frame)
        self._live_lanes.append(lane)
        return True

    def push_control(self, message: ws_pb2.ServerMessage) -> None:
        """Queue a connection-level message (Pong, Heartbeat, errors); past the send
        buffer's hard cap (replies piling up for a client that does not read) the
        socket is evicted as a slow consumer at once, so its memory stays bounded."""
        if message.HasField("error"):
            metrics.ERRORS_SENT.labels(message.error.code).inc()
        self.outbox.push_control(message)
        if self.outbox.bytes > hard_cap(self.limits.send_queue_bytes):
            self.evict_slow("replies piled up unread over the send buffer")
            return
        self._send_ready.set()

    # -- writers -------------------------------------------------------------

    def flush(self) -> None:
        """Write the pending live frames and one round of the queue now if the sender
        is idle (the FlushQueue's call); otherwise hand everything to the sender."""
        live = self._live
        if not live and not self.outbox:
            return
        direct = self._direct
        if (
            direct is None
            or self._sender_busy
            or self._close_plan is not None
            or not direct.writable()
        ):
            if live:
                self._requeue_live()
            self._send_ready.set()
            return
        parts: list[bytes] = []
        if live:
            lanes = self._live_lanes
            self._live, self._live_lanes = [], []
            wire_one = self.codec.wire_one
            parts = [wire_one(f) for f, lane in zip(live, lanes, strict=True) if not lane.closed]
            metrics.HOT.frames_sent += len(parts)
        if self.outbox:
            self._encode_round(parts)
        if not parts:
            return
        try:
            self._write(direct, parts)
        except Exception as exc:  # the peer went away; the reader sees it too
            log.debug("socket write failed", connection_id=self.connection_id, error=repr(exc))
            self.closing = True
            self._abort()
            return
        if self.outbox:
            self._send_ready.set()

    def _encode_round(self, parts: list[bytes]) -> None:
        """Take one outbox round and append it to `parts` as complete WebSocket messages."""
        codec = self.codec
        batch = self.outbox.take_round(
            SEND_QUANTUM, self.limits.max_frame_bytes, codec.frame_cost, codec.batch_overhead
        )
        self._round_taken()
        hot = metrics.HOT
        for item in batch:
            if isinstance(item, list):
                parts.append(codec.wire_frames(item))
                hot.frames_sent += len(item)
            else:
                parts.append(codec.wire(item))

    @staticmethod
    def _write(direct: DirectWriter, parts: list[bytes]) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        direct.write(data)
        hot = metrics.HOT
        hot.messages_sent += len(parts)
        hot.bytes_sent += len(data)

    def _requeue_live(self) -> None:
        """Move the pending live frames to the head of their lanes (for the sender)."""
        by_lane: dict[Lane, list[WireFrame]] = {}
        for frame, lane in zip(self._live, self._live_lanes, strict=True):
            by_lane.setdefault(lane, []).append(frame)
        self._live, self._live_lanes = [], []
        for lane, frames in by_lane.items():
            self.outbox.push_front(lane, frames)

    # -- the sender ------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            plan = self._close_plan
            if plan is None:
                self._sender_busy = False
                try:
                    await self._send_ready.wait()
                finally:
                    self._sender_busy = True
                # One loop turn lets fanout messages that arrived together queue
                # up, so they leave as one WebSocket message instead of one each.
                await asyncio.sleep(0)
                self._send_ready.clear()
                plan = self._close_plan
            if plan is not None:
                if plan.flush_until is not None:
                    await self._send_queued(plan.flush_until)
                await self._write_close(plan)
                return
            await self._send_queued(None)

    async def _send_queued(self, deadline: float | None) -> None:
        """Send rounds until the outbox is empty, the deadline passes, or a close
        is requested (when not flushing)."""
        if self._live:  # taken while the sender was idle; they go first
            self._requeue_live()
        direct = self._direct
        while self.outbox:
            if deadline is None and self._close_plan is not None:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if direct is not None:
                # The whole round in one write, then wait for the drain.
                parts: list[bytes] = []
                self._encode_round(parts)
                if parts:
                    self._write(direct, parts)
                    await direct.drain()
                continue
            await self._send_round()

    async def _send_round(self) -> None:
        """One outbox round through `send` (no direct writer): one awaited send per message."""
        codec = self.codec
        hot = metrics.HOT
        batch = self.outbox.take_round(
            SEND_QUANTUM, self.limits.max_frame_bytes, codec.frame_cost, codec.batch_overhead
        )
        self._round_taken()
        for item in batch:
            if isinstance(item, list):
                data = codec.encode_frames(item)
                hot.frames_sent += len(item)
            else:
                data = codec.encode(item)
            await self._send(data)
            hot.messages_sent += 1
            hot.bytes_sent += len(data)
