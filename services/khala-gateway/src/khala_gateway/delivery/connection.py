"""One authenticated WebSocket: its subscriptions, send queue, sender and feeder.

Up to two tasks per socket, owned here and cancelled by `shutdown`: the *sender*
drains the bounded outbox round-robin across topics into as few WebSocket
messages as possible (one `frame`/`frames` message per round, markers and
errors as their own messages), and the *feeder* does the Postgres work
(replay chunks, snapshots, gap fills, epoch checks) one bounded step per
topic in turn, only while the outbox has room; it exists only while some
subscription is behind, so an idle socket costs one task. Live in-order frames bypass
the feeder entirely (see subscription.py for the ordering guarantee).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from khala_common.logs import get_logger
from khala_common.telemetry import tracer
from khala_gateway import metrics
from khala_gateway.delivery.subscribe import start_subscription
from khala_gateway.delivery.subscription import ReplayGate, State, Subscription
from khala_gateway.domain import codes
from khala_gateway.domain.limits import hard_cap
from khala_gateway.domain.outbox import Lane, Outbox
from khala_gateway.domain.principal import Principal
from khala_gateway.domain.wire import Codec, WireFrame, error_message
from khala_gateway.storage.topic_log import TopicLog
from openagents.sync.v1 import ws_pb2

log = get_logger("khala_gateway.connection")
_tracer = tracer("khala_gateway.connection")

SEND_QUANTUM = 256  # frames per topic per sender round
CLOSE_TIMEOUT_S = 2.0  # per final write / close handshake
FLUSH_TIMEOUT_S = 0.5  # queued content before a (non slow-consumer) close
CLOSE_BUDGET_S = 5.0  # after this the connection is aborted
INTERNAL_RETRY_MS = 1_000


@dataclass(frozen=True)
class Limits:
    """Per-connection limits, from settings."""

    max_frame_bytes: int
    max_subscriptions: int
    send_queue_frames: int
    send_queue_bytes: int
    replay_chunk: int
    replay_budget: int = 0
    max_pending: int = 1_024


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
        self._dirty: dict[Connection, None] = {}
        self._scheduled = False

    def add(self, conn: Connection) -> None:
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


class HubPort(Protocol):
    """What a connection needs from the process-wide hub (implemented by Hub)."""

    log: TopicLog
    replays: ReplayGate

    def attach(self, sub: Subscription) -> None: ...

    def detach(self, sub: Subscription) -> None: ...

    async def acquire_binding(self, topic: str) -> None: ...

    async def release_binding(self, topic: str) -> None: ...

    def stats_for(self, topic: str) -> metrics.TopicStats: ...


@dataclass(frozen=True)
class _ClosePlan:
    code: int
    final: list[ws_pb2.ServerMessage]
    reason: str
    flush_until: float | None  # monotonic deadline for queued content; None: no flush


async def _bounded(awaitable: Awaitable[object], timeout_s: float) -> bool:
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


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a task of this connection and wait for it to end."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class Connection:
    """State and tasks of one socket after a valid Hello."""

    def __init__(
        self,
        connection_id: str,
        hub: HubPort,
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
        self.hub = hub
        self.codec = codec
        self.limits = limits
        self.outbox = Outbox(limits.send_queue_frames, limits.send_queue_bytes)
        self.principal: Principal | None = None
        self.subs: dict[str, Subscription] = {}
        self.behind: dict[Subscription, None] = {}
        self.closing = False
        self.last_heartbeat = time.monotonic()
        self.last_inbound = self.last_heartbeat  # any client message (Ping counts)
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
        # Set when the feeder has (new) work; the feeder task exists only while
        # some subscription is behind (an idle socket holds no feeder).
        self._feed = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._close_plan: _ClosePlan | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, principal: Principal, welcome: ws_pb2.Welcome) -> None:
        """Queue Welcome and start the sender (the feeder starts when there is work)."""
        self.principal = principal
        self.outbox.push_control(ws_pb2.ServerMessage(welcome=welcome))
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

    async def _close(self, plan: _ClosePlan) -> None:
        await _cancel(self._feeder)  # no new Postgres reads; the feeder never writes
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
            if not await _bounded(self._send(self.codec.encode(message)), CLOSE_TIMEOUT_S):
                return False
        return await _bounded(self._close_socket(plan.code, plan.reason), CLOSE_TIMEOUT_S)

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

    async def shutdown(self) -> None:
        """Finish closing, stop the tasks and release every subscription (the handler's finally)."""
        self.closing = True
        if self._closer is not None:
            await _bounded(asyncio.shield(self._closer), CLOSE_BUDGET_S + CLOSE_TIMEOUT_S)
        await _cancel(self._feeder)
        await _cancel(self._sender)
        await asyncio.gather(*(self.drop(sub) for sub in list(self.subs.values())))

    # -- Owner protocol used by subscriptions --------------------------------

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
        if self.behind:
            self._wake_feeder()
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

    def needs_feed(self, sub: Subscription) -> None:
        """`sub` has Postgres work: wake the feeder."""
        self.behind[sub] = None
        self._wake_feeder()

    def feed_later(self, delay_s: float) -> None:
        """Wake the feeder after `delay_s` (retry of a lagging read)."""
        asyncio.get_running_loop().call_later(delay_s, self._wake_feeder)

    def _wake_feeder(self) -> None:
        """Signal the feeder, starting it if no feeder task is running."""
        self._feed.set()
        if self._feeder is None and self._sender is not None and not self.closing:
            self._feeder = asyncio.create_task(
                self._guard(self._feed_loop()), name=f"feed-{self.connection_id}"
            )

    def _requeue_live(self) -> None:
        """Move the pending live frames to the head of their lanes (for the sender)."""
        by_lane: dict[Lane, list[WireFrame]] = {}
        for frame, lane in zip(self._live, self._live_lanes, strict=True):
            by_lane.setdefault(lane, []).append(frame)
        self._live, self._live_lanes = [], []
        for lane, frames in by_lane.items():
            self.outbox.push_front(lane, frames)

    def push_control(self, message: ws_pb2.ServerMessage) -> None:
        """Queue a connection-level message (Pong, Heartbeat, errors); past the send
        buffer's hard cap (replies piling up for a client that does not read) the
        socket is evicted as a slow consumer at once, so its memory stays bounded."""
        if message.HasField("error"):
            metrics.ERRORS_SENT.labels(message.error.code).inc()
        self.outbox.push_control(message)
        if self.outbox.bytes > hard_cap(self.limits.send_queue_bytes):
            metrics.SLOW_CONSUMER_EVICTIONS.inc()
            self.request_close(
                codes.CLOSE_SLOW_CONSUMER,
                [error_message(codes.SLOW_CONSUMER, "replies piled up unread over the send buffer")],
                reason="slow consumer",
                flush=False,
            )
            return
        self._send_ready.set()

    # -- sender and feeder -----------------------------------------------------

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
        codec = self.codec
        hot = metrics.HOT
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
            batch = self.outbox.take_round(
                SEND_QUANTUM, self.limits.max_frame_bytes, codec.frame_cost, codec.batch_overhead
            )
            if self.behind:
                self._wake_feeder()
            for item in batch:
                if isinstance(item, list):
                    data = codec.encode_frames(item)
                    hot.frames_sent += len(item)
                else:
                    data = codec.encode(item)
                await self._send(data)
                hot.messages_sent += 1
                hot.bytes_sent += len(data)

    async def _feed_loop(self) -> None:
        """Step behind subscriptions while the outbox has room; end when none is behind."""
        try:
            while True:
                await self._feed.wait()
                self._feed.clear()
                progressed = True
                while progressed and self.behind and self.outbox.room() > 0:
                    progressed = False
                    for sub in list(self.behind):
                        if self.outbox.room() <= 0:
                            break
                        progressed = await self._feed_one(sub) or progressed
                        if not sub.needs_work():
                            self.behind.pop(sub, None)
                if not self.behind and not self._feed.is_set():
                    return
        finally:
            if self._feeder is asyncio.current_task():
                self._feeder = None

    async def _feed_one(self, sub: Subscription) -> bool:
        if sub.state is State.CLOSED:
            self.behind.pop(sub, None)
            return False
        try:
            outcome = await sub.step(self.hub.log, self.limits.replay_chunk, time.monotonic())
        except Exception as exc:
            log.warning("subscription failed", topic=sub.topic, error=repr(exc))
            await self._end(
                sub,
                ws_pb2.Error(
                    code=codes.INTERNAL,
                    message="reading the topic log failed; resubscribe from your cursor",
                    topic=sub.topic,
                    retry_after_ms=INTERNAL_RETRY_MS,
                ),
            )
            return True
        if outcome.end_with is not None:
            await self._end(sub, outcome.end_with)
        return outcome.progressed

    # -- subscriptions -------------------------------------------------------

    async def subscribe(self, request: ws_pb2.Subscribe) -> None:
        """Handle every cursor in order: Subscribed or an Error each."""
        with _tracer.start_as_current_span("khala.subscribe") as span:
            span.set_attribute("khala.connection_id", self.connection_id)
            span.set_attribute("khala.cursors", len(request.cursors))
            for cursor in request.cursors:
                if self.closing:
                    return
                await start_subscription(
                    self, request.request_id, cursor, request.snapshot_if_stale
                )

    async def unsubscribe(self, topics: Sequence[str]) -> None:
        """End the named subscriptions; unknown topics are ignored."""
        for topic in topics:
            sub = self.subs.get(topic)
            if sub is not None:
                await self.drop(sub)

    async def replace_principal(self, principal: Principal) -> None:
        """A RefreshAuth succeeded: new scope and expiry; drop what it no longer allows."""
        self.principal = principal
        for topic, sub in list(self.subs.items()):
            if not principal.may_read(topic):
                await self._end(
                    sub,
                    ws_pb2.Error(
                        code=codes.FORBIDDEN_TOPIC,
                        message="the refreshed token's scope no longer allows this topic",
                        topic=topic,
                    ),
                )

    async def _end(self, sub: Subscription, error: ws_pb2.Error) -> None:
        if sub.state is State.CLOSED:
            return
        await self.drop(sub)
        self.push_control(ws_pb2.ServerMessage(error=error))

    async def drop(self, sub: Subscription) -> None:
        """End `sub` silently: stop routing, discard its queue, release its binding."""
        if sub.state is State.CLOSED and self.subs.get(sub.topic) is not sub:
            return
        sub.close()
        self.outbox.discard(sub.lane)
        if self.subs.get(sub.topic) is sub:
            del self.subs[sub.topic]
        self.behind.pop(sub, None)
        self.hub.detach(sub)
        if sub.holds_binding:
            sub.holds_binding = False
            await self.hub.release_binding(sub.topic)
