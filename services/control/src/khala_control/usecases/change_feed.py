"""Postgres NOTIFY feed that keeps control's in-process caches honest.

Writers send `pg_notify(channel, key)` inside the transaction of a change
(membership changes: the user id on `khala_control_memberships`; session
revocations: the session id on `khala_control_sessions`); Postgres delivers
it to every listener when the transaction commits. One `ChangeFeed` per
process keeps a dedicated LISTEN connection and calls the subscribers.

Guarantee to the caches: while `listening` is True, every change committed
after the feed connected is delivered (Postgres delivers all notifications
of a live session). Whenever the connection is (re)established or lost, every
subscriber's `reset` runs, because notifications sent while it was down are
gone. The connection is pinged every `PING_S`; one that dies silently is
detected by the ping within `PING_S + PING_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from khala_common.logs import get_logger

PING_S = 5.0
PING_TIMEOUT_S = 2.0
RECONNECT_S = 1.0
APPLICATION_NAME = "khala-control-feed"
log = get_logger("change_feed")


class ChangeFeed:
    """One LISTEN connection; `run` is owned (cancelled and awaited) by the app."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self._resets: list[Callable[[], None]] = []
        self.listening = False
        self.connected = asyncio.Event()

    def subscribe(
        self, channel: str, on_change: Callable[[str], None], on_reset: Callable[[], None]
    ) -> None:
        """Call `on_change(payload)` per notification, `on_reset()` on (re)connect and loss."""
        self._handlers.setdefault(channel, []).append(on_change)
        self._resets.append(on_reset)

    async def run(self) -> None:
        """Keep the LISTEN connection up until cancelled."""
        if not self._handlers:
            return
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed down; caches bypassed", error=repr(exc))
            await asyncio.sleep(RECONNECT_S)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _: lost.set())
            for channel in self._handlers:
                await conn.add_listener(channel, self._on_notify)
            self._reset()
            self.listening = True
            self.connected.set()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=PING_S)
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
            raise ConnectionError("listen connection closed")
        finally:
            self.listening = False
            self.connected.clear()
            self._reset()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=PING_TIMEOUT_S)

    def _reset(self) -> None:
        for reset in self._resets:
            reset()

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        for handler in self._handlers.get(channel, ()):
            handler(str(payload))
