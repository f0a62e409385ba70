"""One authenticated WebSocket: its principal, subscriptions and feeder.

The send side (outbox, sender, direct writes, close) is `SendBuffer`; this
class adds what the socket delivers. Up to two tasks per socket, owned here and
cancelled by `shutdown`: the sender (see send_buffer.py) and the *feeder*,
which does the Postgres work (replay chunks, snapshots, gap fills, epoch
checks) one bounded step per topic in turn, only while the outbox has room; it
exists only while some subscription is behind, so an idle socket costs one
task. Live in-order frames bypass the feeder entirely (see subscription.py for
the ordering guarantee).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from khala_common.logs import get_logger
from khala_gateway.domain import codes
from khala_gateway.domain.limits import Limits
from khala_gateway.domain.principal import Principal
from khala_gateway.domain.wire import Codec
from khala_gateway.usecases.ports import HubPort
from khala_gateway.usecases.send_buffer import (
    INTERNAL_RETRY_MS,
    DirectWriter,
    FlushQueue,
    SendBuffer,
    cancel_task,
)
from khala_gateway.usecases.subscription import State, Subscription
from openagents.sync.v1 import ws_pb2

log = get_logger("khala_gateway.connection")


class Connection(SendBuffer):
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
        super().__init__(
            connection_id,
            codec,
            send,
            close_socket,
            abort,
            limits,
            direct=direct,
            flushes=flushes,
        )
        self.hub = hub
        self.principal: Principal | None = None
        self.subs: dict[str, Subscription] = {}
        self.behind: dict[Subscription, None] = {}
        self.last_heartbeat = time.monotonic()
        self.last_inbound = self.last_heartbeat  # any client message (Ping counts)
        # Set when the feeder has (new) work; the feeder task exists only while
        # some subscription is behind (an idle socket holds no feeder).
        self._feed = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, principal: Principal, welcome: ws_pb2.Welcome) -> None:
        """Queue Welcome and start the sender (the feeder starts when there is work)."""
        self.principal = principal
        self._start_sender(ws_pb2.ServerMessage(welcome=welcome))

    async def shutdown(self) -> None:
        """Finish closing, stop the tasks and release every subscription (the handler's finally)."""
        await self._finish_close()
        await cancel_task(self._feeder)
        await self._stop_sending()
        await asyncio.gather(*(self.drop(sub) for sub in list(self.subs.values())))

    async def _stop_feeding(self) -> None:
        await cancel_task(self._feeder)

    # -- the feeder (Owner protocol of subscriptions) -----------------------------

    def _round_taken(self) -> None:
        if self.behind:
            self._wake_feeder()

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

    async def _feed_loop(self) -> None:
        """Step behind subscriptions while the outbox has room; end when none is behind."""
        try:
            while True:
                await self._feed.wait()
                self._feed.clear()
                progressed = True
                while progressed and self.behind and self.outbox.room() > 0:
                    progressed = await self._feed_round()
                if not self.behind and not self._feed.is_set():
                    return
        finally:
            if self._feeder is asyncio.current_task():
                self._feeder = None

    async def _feed_round(self) -> bool:
        """One step of every behind subscription (while there is room); whether any progressed."""
        progressed = False
        for sub in list(self.behind):
            if self.outbox.room() <= 0:
                break
            progressed = await self._feed_one(sub) or progressed
            if not sub.needs_work():
                self.behind.pop(sub, None)
        return progressed

    async def _feed_one(self, sub: Subscription) -> bool:
        if sub.state is State.CLOSED:
            self.behind.pop(sub, None)
            return False
        try:
            outcome = await sub.step(self.hub.log, self.limits.replay_chunk, time.monotonic())
        except Exception as exc:
            log.warning("subscription failed", topic=sub.topic, error=repr(exc))
            await self.end(
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
            await self.end(sub, outcome.end_with)
        return outcome.progressed

    # -- subscriptions -------------------------------------------------------

    async def end(self, sub: Subscription, error: ws_pb2.Error) -> None:
        """End `sub` with `error` sent to the client (unless it ended already)."""
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
