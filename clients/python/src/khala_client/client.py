"""A resilient subscriber: reconnects, resumes from stored cursors, refreshes tokens.

Delivery guarantee to the application, per topic: `FrameApplied` updates come
exactly once and in `seq` order within an epoch, across reconnects, gateway
restarts and client restarts (with a persistent cursor store). Frames at or
below the cursor are discarded (idempotent apply), a gap is healed by
resubscribing from the cursor, and a cursor that cannot be resumed
(`stale_cursor`, or a frame of another epoch) yields `TopicReset` and a fresh
subscription (snapshot for doc topics, oldest retained frame for event topics).
A frame's cursor is stored only after the application has processed it: when it
asks for the next update. A crash in between re-delivers that frame after a
restart, never skips it.

Reconnects follow protocol §7: exponential backoff with full jitter, reset
after a healthy connection; `Reconnect.retry_after_ms` is used as given and
any error's `retry_after_ms` is a floor. 4009 (session revoked), 4010 (upgrade
required) and 4003 for a refused Origin stop the client with an exception. The
sync token is renewed over `RefreshAuth` before it expires, and minted anew
before a connection attempt when it is about to expire or after a 4001.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable

import aiohttp

from khala_client.api import ApiError
from khala_client.backoff import Backoff
from khala_client.cursors import Cursor, CursorStore, MemoryCursorStore
from khala_client.payloads import UnknownSchema, decode_payload
from khala_client.tokens import SyncToken, TokenSource
from khala_client.tracker import TopicTracker, Verdict
from khala_client.updates import (
    Connected,
    Disconnected,
    FrameApplied,
    Live,
    Notice,
    SnapshotAborted,
    SnapshotCompleted,
    SnapshotStarted,
    Subscribed,
    TopicFailed,
    TopicReset,
    Update,
)
from khala_client.ws import PROTO, HelloRefused, SyncConnection, connect
from openagents.sync.v1 import frames_pb2, ws_pb2

CURSORS_PER_SUBSCRIBE = 100
RESET_REASONS = {"epoch_changed", "cursor_ahead", "retention"}


class ClientStopped(Exception):
    """The client must not reconnect: `code` says why (act on it, do not retry)."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code


class SessionRevoked(ClientStopped):
    """Close 4009: the session was revoked; sign in again."""


class UpgradeRequired(ClientStopped):
    """Close 4010 / 426: this client version is below the minimum."""


class OriginForbidden(ClientStopped):
    """Close 4003 for the Origin: a configuration error."""


class AuthenticationFailed(ClientStopped):
    """No sync token can be minted (signed out, or refresh failed)."""


Commit = tuple[str, Cursor | None]  # (topic, cursor to store; None = delete)


class KhalaClient:
    """Follows topics over `/v1/ws`, yielding `Update`s from `updates()`."""

    def __init__(
        self,
        url: str,
        tokens: TokenSource,
        *,
        topics: Iterable[str] = (),
        store: CursorStore | None = None,
        protocol: str = PROTO,
        http: aiohttp.ClientSession | None = None,
        client_name: str = "khala-client-python",
        client_version: str = "1.0.0",
        backoff: Backoff | None = None,
        refresh_margin_s: float = 60.0,
        snapshot_if_stale: bool = True,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.tokens = tokens
        self.store: CursorStore = store if store is not None else MemoryCursorStore()
        self.protocol = protocol
        self.http = http
        self.client_name = client_name
        self.client_version = client_version
        self.backoff = backoff or Backoff()
        self.refresh_margin_s = refresh_margin_s
        self.snapshot_if_stale = snapshot_if_stale
        self.connect_timeout_s = connect_timeout_s
        self.trackers: dict[str, TopicTracker] = {}
        stored = self.store.load()
        for topic in topics:
            self.trackers[topic] = TopicTracker.from_cursor(topic, stored.get(topic, Cursor()))
        self.conn: SyncConnection | None = None
        self.connection_id = ""
        self.stats: dict[str, int] = dict.fromkeys(
            ("connections", "duplicates", "gaps", "resets", "refreshes", "mints"), 0
        )
        self._token: SyncToken | None = None
        self._token_lifetime_s = 0.0
        self._closing = False
        self._closed = asyncio.Event()
        self._request_ids = itertools.count(1)
        self._reconnect_at: float | None = None
        self._last_error: ws_pb2.Error | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._healthy_since: float | None = None

    # -- public API -------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics this client follows."""
        return list(self.trackers)

    def cursor(self, topic: str) -> Cursor:
        """The topic's current (in-memory) cursor."""
        tracker = self.trackers.get(topic)
        return tracker.cursor if tracker else Cursor()

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Follow more topics (from their stored cursors); sent at once when connected."""
        stored = self.store.load()
        added = [t for t in topics if t not in self.trackers]
        for topic in added:
            self.trackers[topic] = TopicTracker.from_cursor(topic, stored.get(topic, Cursor()))
        if added and self.conn is not None and not self.conn.closed:
            await self._send_subscribe(self.conn, added)

    async def unsubscribe(self, topics: Iterable[str], *, forget: bool = False) -> None:
        """Stop following topics; `forget` also deletes their stored cursors."""
        removed = [t for t in topics if self.trackers.pop(t, None) is not None]
        if forget:
            for topic in removed:
                self.store.delete(topic)
        if removed and self.conn is not None and not self.conn.closed:
            await self.conn.unsubscribe(removed, request_id=self._request_id())

    async def close(self) -> None:
        """Stop: close the socket; `updates()` ends."""
        self._closing = True
        self._closed.set()
        if self.conn is not None:
            await self.conn.close()

    async def updates(self) -> AsyncIterator[Update]:
        """Connect, subscribe and yield updates until `close()`; reconnects on its own."""
        own_http = self.http is None
        http = self.http or aiohttp.ClientSession()
        try:
            while not self._closing:
                async with contextlib.aclosing(self._attempt(http)) as attempt:
                    async for update in attempt:
                        yield update
        finally:
            await self._cancel_tasks()
            if own_http:
                await http.close()

    # -- one connection attempt -------------------------------------------

    async def _attempt(self, http: aiohttp.ClientSession) -> AsyncGenerator[Update, None]:
        self._reconnect_at = None
        self._last_error = None
        try:
            token = await self._token_for_attempt()
            conn = await connect(
                http,
                self.url,
                token.token,
                protocol=self.protocol,
                client_name=self.client_name,
                client_version=self.client_version,
                timeout_s=self.connect_timeout_s,
                close_timeout_s=1.0,
            )
        except HelloRefused as exc:
            delay = self._after_refusal(exc)
            yield Disconnected(exc.close_code, f"{exc.code}: {exc.message}", delay)
            await self._sleep(delay)
            return
        except ApiError as exc:
            delay = self._after_mint_failure(exc)
            yield Disconnected(None, f"sync token: {exc}", delay)
            await self._sleep(delay)
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            delay = self.backoff.next_delay()
            yield Disconnected(None, f"connect failed: {exc!r}", delay)
            await self._sleep(delay)
            return
        async with contextlib.aclosing(self._serve(conn)) as served:
            async for update in served:
                yield update
        for topic, tracker in self.trackers.items():
            if tracker.in_snapshot:
                yield SnapshotAborted(topic)
            tracker.deactivate()
        delay = self._after_close(conn)
        yield Disconnected(conn.close_code, self._close_reason(conn), delay)
        await self._sleep(delay)

    async def _serve(self, conn: SyncConnection) -> AsyncGenerator[Update, None]:
        self.conn = conn
        self.connection_id = conn.welcome.connection_id
        self.stats["connections"] += 1
        self._healthy_since = None if self.trackers else time.monotonic()
        refresher = asyncio.create_task(self._refresh_loop(conn))
        try:
            if self.trackers:  # before Connected: topics added by the consumer then are sent once
                await self._send_subscribe(conn, list(self.trackers))
            yield Connected(conn.welcome.connection_id, conn.welcome)
            idle_s = 2 * (conn.welcome.heartbeat_interval_ms or 15_000) / 1000.0
            while not conn.closed:
                try:
                    message = await conn.receive(idle_s)
                except TimeoutError:
                    self._last_error = ws_pb2.Error(
                        code="heartbeat_timeout", message=f"silent for {idle_s:.0f}s"
                    )
                    await conn.close(code=4000)
                    break
                if message is None:
                    break
                for update, commit in await self._handle(conn, message):
                    yield update
                    if commit is not None:
                        self._commit(commit)
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            self._last_error = ws_pb2.Error(code="connection_lost", message=repr(exc))
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await self._cancel_tasks()
            self.conn = None
            if not conn.closed:
                await conn.close()

    def _commit(self, commit: Commit) -> None:
        topic, cursor = commit
        if cursor is None:
            self.store.delete(topic)
        elif topic in self.trackers:
            self.store.save(topic, cursor)

    # -- inbound messages -------------------------------------------------

    async def _handle(
        self, conn: SyncConnection, message: ws_pb2.ServerMessage
    ) -> list[tuple[Update, Commit | None]]:
        kind = message.WhichOneof("body")
        if kind == "frame":
            return await self._frames(conn, [message.frame])
        if kind == "frames":
            return await self._frames(conn, list(message.frames.frames))
        if kind == "subscribed":
            return self._subscribed(message.subscribed)
        if kind == "snapshot_begin":
            return self._snapshot_begin(message.snapshot_begin)
        if kind == "snapshot_end":
            return self._snapshot_end(message.snapshot_end)
        if kind == "watermark":
            return self._watermark(message.watermark)
        if kind == "error":
            return await self._error(conn, message.error)
        if kind == "reconnect":
            return self._reconnect(message.reconnect)
        return []  # heartbeat, pong, welcome: nothing to apply

    def _subscribed(self, sub: ws_pb2.Subscribed) -> list[tuple[Update, Commit | None]]:
        tracker = self.trackers.get(sub.topic)
        if tracker is None:
            return []
        resumed = tracker.last_applied > 0
        tracker.subscribed(sub.epoch, sub.oldest_seq)
        return [(Subscribed(sub.topic, sub.epoch, sub.head_seq, sub.oldest_seq, resumed), None)]

    def _snapshot_begin(self, begin: ws_pb2.SnapshotBegin) -> list[tuple[Update, Commit | None]]:
        tracker = self.trackers.get(begin.topic)
        if tracker is None or not tracker.active:
            return []
        tracker.snapshot_begin(begin.epoch, begin.as_of_seq)
        return [(SnapshotStarted(begin.topic, begin.epoch, begin.as_of_seq), None)]

    def _snapshot_end(self, end: ws_pb2.SnapshotEnd) -> list[tuple[Update, Commit | None]]:
        tracker = self.trackers.get(end.topic)
        if tracker is None or not tracker.in_snapshot:
            return []
        cursor = tracker.snapshot_end(end.as_of_seq)
        return [(SnapshotCompleted(end.topic, end.as_of_seq), (end.topic, cursor))]

    def _watermark(self, mark: ws_pb2.Watermark) -> list[tuple[Update, Commit | None]]:
        if mark.live and mark.topic in self.trackers and self._healthy_since is None:
            self._healthy_since = time.monotonic()
        return (
            [(Live(mark.topic, mark.seq, mark.live), None)] if mark.topic in self.trackers else []
        )

    def _reconnect(self, reconnect: ws_pb2.Reconnect) -> list[tuple[Update, Commit | None]]:
        self._reconnect_at = time.monotonic() + reconnect.retry_after_ms / 1000.0
        text = f"server asked to reconnect ({reconnect.reason}) in {reconnect.retry_after_ms} ms"
        return [(Notice("", text), None)]

    async def _frames(
        self, conn: SyncConnection, frames: list[frames_pb2.KhalaFrame]
    ) -> list[tuple[Update, Commit | None]]:
        out: list[tuple[Update, Commit | None]] = []
        for frame in frames:
            tracker = self.trackers.get(frame.topic)
            if tracker is None:
                continue
            verdict = tracker.judge(frame.epoch, frame.seq)
            if verdict is Verdict.APPLY:
                try:
                    payload = decode_payload(frame)
                except UnknownSchema as exc:
                    out.append((TopicFailed(frame.topic, "unknown_schema", str(exc)), None))
                    await self.unsubscribe([frame.topic])
                    continue
                in_snapshot = tracker.in_snapshot
                tracker.applied(frame.seq)
                commit = None if in_snapshot else (frame.topic, tracker.cursor)
                out.append((FrameApplied(frame.topic, frame, payload, in_snapshot), commit))
            elif verdict is Verdict.DUPLICATE:
                self.stats["duplicates"] += 1
            elif verdict is Verdict.EPOCH_CHANGED:
                await conn.unsubscribe([frame.topic], request_id=self._request_id())
                out.extend(await self._rebootstrap(conn, frame.topic, "epoch_changed"))
            elif verdict is Verdict.GAP:
                self.stats["gaps"] += 1
                expected = tracker.expected_next
                tracker.deactivate()
                await conn.unsubscribe([frame.topic], request_id=self._request_id())
                await self._send_subscribe(conn, [frame.topic])
                message = f"gap (expected seq {expected}, got {frame.seq}) on {conn.welcome.connection_id}; resubscribed"
                out.append((Notice(frame.topic, message), None))
        return out

    async def _error(
        self, conn: SyncConnection, error: ws_pb2.Error
    ) -> list[tuple[Update, Commit | None]]:
        topic = error.topic
        tracker = self.trackers.get(topic) if topic else None
        if tracker is None:
            if not topic:
                self._last_error = error
                return [(Notice("", f"{error.code}: {error.message}"), None)]
            return []
        if error.code == "stale_cursor":
            if error.reason == "replay_budget" and error.retry_after_ms and not _is_doc(topic):
                tracker.deactivate()
                self._later(error.retry_after_ms / 1000.0, conn, topic)
                return [
                    (
                        Notice(
                            topic, f"replay budget reached; retrying in {error.retry_after_ms} ms"
                        ),
                        None,
                    )
                ]
            return await self._rebootstrap(conn, topic, error.reason or "stale_cursor")
        if error.code == "internal":
            tracker.deactivate()
            self._later(max(error.retry_after_ms, 1000) / 1000.0, conn, topic)
            return [(Notice(topic, f"internal error: {error.message}; resubscribing"), None)]
        if error.code == "bad_request":
            return [(Notice(topic, f"bad_request: {error.message}"), None)]
        self.trackers.pop(topic, None)
        return [(TopicFailed(topic, error.code, error.message), None)]

    async def _rebootstrap(
        self, conn: SyncConnection, topic: str, reason: str
    ) -> list[tuple[Update, Commit | None]]:
        """Drop the topic's state and subscribe afresh (snapshot / oldest frame)."""
        tracker = self.trackers.get(topic)
        if tracker is None:
            return []
        self.stats["resets"] += 1
        tracker.reset()
        await self._send_subscribe(conn, [topic])
        return [(TopicReset(topic, reason), (topic, None))]

    async def _resubscribe(self, conn: SyncConnection, topic: str) -> None:
        if topic in self.trackers and not conn.closed and self.conn is conn:
            await self._send_subscribe(conn, [topic])

    async def _send_subscribe(self, conn: SyncConnection, topics: list[str]) -> None:
        for start in range(0, len(topics), CURSORS_PER_SUBSCRIBE):
            cursors = []
            for topic in topics[start : start + CURSORS_PER_SUBSCRIBE]:
                tracker = self.trackers[topic]
                tracker.deactivate()
                cursor = tracker.cursor
                epoch = cursor.epoch if cursor.after_seq else ""
                cursors.append(
                    ws_pb2.TopicCursor(topic=topic, epoch=epoch, after_seq=cursor.after_seq)
                )
            await conn.subscribe_cursors(
                self._request_id(), cursors, snapshot_if_stale=self.snapshot_if_stale
            )

    def _request_id(self) -> str:
        return f"r{next(self._request_ids)}"

    # -- tokens -----------------------------------------------------------

    def _margin_s(self) -> float:
        return (
            min(self.refresh_margin_s, self._token_lifetime_s / 2)
            if self._token_lifetime_s
            else self.refresh_margin_s
        )

    async def _mint(self) -> SyncToken:
        token = await self.tokens()
        self.stats["mints"] += 1
        self._token = token
        remaining = token.remaining_s()
        self._token_lifetime_s = remaining if remaining != float("inf") else 0.0
        return token

    async def _token_for_attempt(self) -> SyncToken:
        token = self._token
        if token is None or token.remaining_s() < self._margin_s():
            token = await self._mint()
        return token

    async def _refresh_loop(self, conn: SyncConnection) -> None:
        """Send RefreshAuth with a new token `margin` before the current one expires."""
        while not conn.closed:
            token = self._token
            expires_ms = (token.expires_at_ms if token else 0) or conn.welcome.token_expires_at_ms
            if not expires_ms:
                return
            wait_s = (expires_ms - time.time() * 1000) / 1000.0 - self._margin_s()
            await asyncio.sleep(max(wait_s, 1.0))
            try:
                fresh = await self._mint()
            except (ApiError, aiohttp.ClientError, OSError):
                await asyncio.sleep(5.0)  # keep trying; a 4001 at expiry reconnects anyway
                continue
            if conn.closed:
                return
            await conn.refresh_auth(fresh.token)
            self.stats["refreshes"] += 1

    # -- what to do after a socket ends -----------------------------------

    def _after_close(self, conn: SyncConnection) -> float:
        healthy_since, self._healthy_since = self._healthy_since, None
        if healthy_since is not None:
            self.backoff.connection_lasted(time.monotonic() - healthy_since)
        if self._closing:
            return 0.0
        if self._reconnect_at is not None:
            return max(0.0, self._reconnect_at - time.monotonic())
        code = conn.close_code
        self._raise_if_final(code, conn.close_reason, self._last_error)
        if code == 4001:
            self._token = None
        retry_after = self._last_error.retry_after_ms / 1000.0 if self._last_error else 0.0
        return self.backoff.next_delay(retry_after)

    def _after_refusal(self, exc: HelloRefused) -> float:
        error = ws_pb2.Error(code=exc.code, message=exc.message, retry_after_ms=exc.retry_after_ms)
        self._raise_if_final(exc.close_code, exc.message, error)
        if exc.close_code == 4001 or exc.code in ("unauthorized", "token_expired"):
            self._token = None
        return self.backoff.next_delay(exc.retry_after_ms / 1000.0)

    def _after_mint_failure(self, exc: ApiError) -> float:
        if exc.status in (401, 403):
            raise AuthenticationFailed(exc.code, exc.message)
        if exc.status == 426:
            raise UpgradeRequired(exc.code, exc.message)
        retry_after = 0.0
        if isinstance(exc.body, dict):
            retry_after = float(exc.body.get("error", {}).get("retry_after_s", 0) or 0)
        return self.backoff.next_delay(retry_after)

    @staticmethod
    def _raise_if_final(code: int | None, reason: str, error: ws_pb2.Error | None) -> None:
        error_code = error.code if error else ""
        if code == 4009 or error_code == "reauth_required":
            raise SessionRevoked("reauth_required", "the session was revoked: sign in again", code)
        if code == 4010 or error_code == "upgrade_required":
            raise UpgradeRequired("upgrade_required", error.message if error else reason, code)
        if code == 4003 and "origin" in reason.lower():
            raise OriginForbidden("forbidden", reason, code)

    def _close_reason(self, conn: SyncConnection) -> str:
        if self._closing:
            return "closed by client"
        if self._reconnect_at is not None:
            return "server drain (Reconnect)"
        if self._last_error is not None:
            return f"{self._last_error.code}: {self._last_error.message}"
        return conn.close_reason or "closed"

    async def _sleep(self, delay: float) -> None:
        """Wait before the next attempt; `close()` cuts the wait short."""
        if delay > 0 and not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    # -- owned background tasks -------------------------------------------

    def _later(self, delay_s: float, conn: SyncConnection, topic: str) -> None:
        """Resubscribe `topic` from its cursor after `delay_s` (if still on `conn`)."""

        async def run() -> None:
            await asyncio.sleep(delay_s)
            await self._resubscribe(conn, topic)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


def _is_doc(topic: str) -> bool:
    """`org.<org>.runs` and `org.<org>.workers` are document topics."""
    parts = topic.split(".")
    return len(parts) == 3 and parts[2] in ("runs", "workers")
