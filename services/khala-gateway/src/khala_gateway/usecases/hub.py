"""The process-wide side of delivery: which local subscriptions hold which topic,
the fanout dispatch, the head poll, and per-connection housekeeping.

Each `khala.fanout` message is decoded once per process and the same frame
object is offered to every local subscription of its topic (the subscription
decides send / drop / gap). The broker is only a doorbell: the head poll reads
all subscribed topics' heads in one query every interval, so a lost last
message is still delivered (from Postgres) within two intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from khala_common.logs import get_logger
from khala_common.telemetry import exemplar
from khala_gateway import metrics
from khala_gateway.adapters.bindings import Bindings
from khala_gateway.domain import codes
from khala_gateway.domain.wire import DecodeError, WireFrame
from khala_gateway.metrics import TopicStats
from khala_gateway.settings import Settings
from khala_gateway.storage.topic_log import TopicLog
from khala_gateway.usecases import session_auth
from khala_gateway.usecases.connection import Connection
from khala_gateway.usecases.send_buffer import FlushQueue
from khala_gateway.usecases.subscription import ReplayGate, Subscription
from openagents.sync.v1 import ws_pb2

log = get_logger("khala_gateway.hub")

HEAD_POLL_BATCH = 5_000
RATE_SAMPLE_S = 1.0  # window of the admin API's frames_per_second


class Hub:
    """Registry of this process's connections and subscriptions."""

    def __init__(self, topic_log: TopicLog, settings: Settings) -> None:
        self.log = topic_log
        self.settings = settings
        self.bindings: Bindings | None = None
        self.connections: set[Connection] = set()
        self.topic_subs: dict[str, set[Subscription]] = {}
        self.topic_stats: dict[str, TopicStats] = {}
        self.draining = False
        self.replays = ReplayGate(settings.max_concurrent_replays)
        self.flushes = FlushQueue()
        self._users: dict[str, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # -- registry --------------------------------------------------------

    def register(self, conn: Connection) -> None:
        """A socket was accepted."""
        self.connections.add(conn)
        self._idle.clear()
        metrics.CONNECTIONS.inc()
        metrics.CONNECTIONS_OPENED.inc()

    def user_connections(self, user_id: str) -> int:
        """Authenticated sockets of `user_id` on this instance."""
        return self._users.get(user_id, 0)

    def authenticated(self, conn: Connection) -> None:
        """A socket passed Hello (counted against its user's connection cap)."""
        assert conn.principal is not None
        user = conn.principal.user_id
        self._users[user] = self._users.get(user, 0) + 1

    def unregister(self, conn: Connection) -> None:
        """A socket is gone (its subscriptions were dropped already)."""
        if conn in self.connections:
            if conn.principal is not None:
                user = conn.principal.user_id
                left = self._users.get(user, 1) - 1
                if left > 0:
                    self._users[user] = left
                else:
                    self._users.pop(user, None)
            self.connections.discard(conn)
            metrics.CONNECTIONS.dec()
            if not self.connections:
                self._idle.set()

    def stats_for(self, topic: str) -> TopicStats:
        """The topic's counters (created with its first local subscriber)."""
        stats = self.topic_stats.get(topic)
        if stats is None:
            stats = self.topic_stats[topic] = TopicStats(topic)
        return stats

    def attach(self, sub: Subscription) -> None:
        """Route the topic's fanout frames to `sub` from now on."""
        self.topic_subs.setdefault(sub.topic, set()).add(sub)
        sub.stats.subscribers += 1
        metrics.SUBSCRIPTIONS.inc()

    def detach(self, sub: Subscription) -> None:
        """Stop routing frames to `sub`."""
        subs = self.topic_subs.get(sub.topic)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        sub.stats.subscribers -= 1
        metrics.SUBSCRIPTIONS.dec()
        if not subs:
            del self.topic_subs[sub.topic]
            self.topic_stats.pop(sub.topic, None)

    async def acquire_binding(self, topic: str) -> None:
        """Bind the topic to this instance's fanout queue (reference counted)."""
        if self.bindings is None:
            raise RuntimeError("the broker is not connected")
        await self.bindings.acquire(topic)

    async def release_binding(self, topic: str) -> None:
        """Release one hold on the topic's binding."""
        if self.bindings is not None:
            await self.bindings.release(topic)

    # -- fanout ------------------------------------------------------------

    def on_fanout(self, body: bytes) -> None:
        """One khala.fanout message: decode once, offer to every local subscriber."""
        metrics.HOT.fanout_messages += 1
        try:
            frame = WireFrame.decode(body)
        except DecodeError:
            metrics.FANOUT_UNDECODABLE.inc()
            return
        subs = self.topic_subs.get(frame.topic)
        published_at_ms = frame.published_at_ms
        lag_s = 0.0
        if published_at_ms > 0:
            lag_s = max(0.0, time.time() - published_at_ms / 1000)
            metrics.FANOUT_LAG.observe(lag_s, exemplar())
        if not subs:
            return
        stats = self.topic_stats.get(frame.topic)
        if stats is not None and published_at_ms > 0:
            stats.fanout_lag_ms = lag_s * 1000
        for sub in tuple(subs):
            try:
                sub.on_live(frame)
            except Exception:  # one broken subscription must not starve the others
                log.exception("live delivery failed", topic=sub.topic)

    async def run_head_poll(self) -> None:
        """Every interval, read the heads of all subscribed topics in one query."""
        interval = self.settings.head_poll_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.poll_heads()

    async def poll_heads(self) -> None:
        """One head poll over every locally subscribed topic."""
        topics = list(self.topic_subs)
        for start in range(0, len(topics), HEAD_POLL_BATCH):
            try:
                heads = await self.log.heads(topics[start : start + HEAD_POLL_BATCH])
            except Exception as exc:
                log.warning("head poll failed", error=repr(exc))
                return
            for topic, head in heads.items():
                for sub in tuple(self.topic_subs.get(topic, ())):
                    sub.on_head(head)

    # -- housekeeping ----------------------------------------------------

    async def run_housekeeping(self) -> None:
        """Heartbeats, idle and token expiry, slow consumers, and per-topic frame rates."""
        tick = max(0.02, min(0.5, self.settings.heartbeat_interval_ms / 4000))
        sampled_at = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            now_ms = int(time.time() * 1000)
            for conn in tuple(self.connections):
                self.tick(conn, now, now_ms)
            if now - sampled_at >= RATE_SAMPLE_S:
                sampled_at = now
                for stats in tuple(self.topic_stats.values()):
                    stats.sample(now)

    def tick(self, conn: Connection, now: float, now_ms: int) -> None:
        """Housekeeping of one connection."""
        principal = conn.principal
        if conn.closing or principal is None:
            return
        s = self.settings
        if now - conn.last_heartbeat >= s.heartbeat_interval_ms / 1000:
            conn.last_heartbeat = now
            conn.push_control(
                ws_pb2.ServerMessage(heartbeat=ws_pb2.Heartbeat(server_time_ms=now_ms))
            )
        if s.idle_timeout_s > 0 and now - conn.last_inbound > s.idle_timeout_s:
            conn.request_close(codes.CLOSE_IDLE_TIMEOUT, reason="idle timeout")
        elif session_auth.token_expired(principal, now_ms, s.token_expiry_grace_s):
            session_auth.close_expired(conn)
        elif conn.outbox.saturated_for() > s.slow_consumer_grace_s:
            for topic in conn.subs:
                self.stats_for(topic).slow_consumer_evictions += 1
            conn.evict_slow(
                f"send buffer over its bound for more than {s.slow_consumer_grace_s:g} s"
            )

    # -- control -----------------------------------------------------------

    def revoke(self, kind: int, session_ids: tuple[str, ...], user_id: str, device_id: str) -> int:
        """Close the sockets a revocation covers with reauth_required / 4009."""
        return session_auth.revoke(self.connections, kind, session_ids, user_id, device_id)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Send Reconnect (jittered per socket) and close every socket with 1012."""
        self.draining = True
        s = self.settings
        for conn in tuple(self.connections):
            final: list[ws_pb2.ServerMessage] = []
            if conn.principal is not None:
                delay = s.drain_retry_ms + random.randint(0, s.drain_jitter_ms)
                final.append(
                    ws_pb2.ServerMessage(
                        reconnect=ws_pb2.Reconnect(reason="drain", retry_after_ms=delay)
                    )
                )
            conn.request_close(codes.CLOSE_SERVICE_RESTART, final, reason="drain")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    # -- admin -------------------------------------------------------------

    def fanout_metrics(self, topic_limit: int) -> tuple[int, list[TopicStats]]:
        """Connection count and the busiest topics (by subscribers, then frames)."""
        ranked = sorted(
            self.topic_stats.values(), key=lambda t: (-t.subscribers, -t.frames_sent, t.topic)
        )
        return len(self.connections), ranked[:topic_limit]
