"""In-process caches of what every request reads: the caller's live session
(`SessionService.authenticate`) and their memberships (the mint path).

Freshness guarantee: an entry is evicted when Postgres notifies a change of
its key (`change_feed.py`), and the process making a change evicts right after
its own commit, so it reads its own writes at once and other processes within
the NOTIFY delivery time (milliseconds). A lookup that overlaps an eviction is
not stored (a generation counter), so a stale answer cannot be cached after
the evict. The caches only answer while the feed is listening; otherwise every
lookup reads Postgres. `ttl_s` bounds any remaining staleness (a feed that died
silently before its ping noticed); `ttl_s = 0` turns the caches off.

Only live sessions are cached: a revoked or unknown session is read again on
every request, so it can never be "remembered" as valid.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

from khala_control.domain.models import DeviceSession, Membership
from khala_control.metrics import CACHE_LOOKUPS
from khala_control.storage import orgs
from khala_control.storage import sessions as session_store
from khala_control.usecases.change_feed import ChangeFeed

MAX_ENTRIES = 100_000
V = TypeVar("V")


class _Cache(Generic[V]):
    """Entries by key, valid while the feed listens and for at most `ttl_s`."""

    def __init__(
        self,
        name: str,
        feed: ChangeFeed,
        ttl_s: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._feed = feed
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._generation = 0

    @property
    def enabled(self) -> bool:
        """Whether caching is configured at all."""
        return self._ttl_s > 0

    def invalidate(self, key: str) -> None:
        """Forget `key` (it changed)."""
        self._generation += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._generation += 1
        self._entries.clear()

    async def _get(
        self, key: str, load: Callable[[], Awaitable[V]], keep: Callable[[V], bool]
    ) -> V:
        usable = self.enabled and self._feed.listening
        if usable:
            cached = self._entries.get(key)
            if cached is not None and self._clock() - cached[0] < self._ttl_s:
                CACHE_LOOKUPS.labels(cache=self._name, result="hit").inc()
                return cached[1]
        generation = self._generation
        value = await load()
        CACHE_LOOKUPS.labels(cache=self._name, result="miss" if usable else "bypass").inc()
        if usable and keep(value) and self._feed.listening and generation == self._generation:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value


class MembershipCache(_Cache[list[Membership]]):
    """A user's memberships, evicted on `khala_control_memberships` notifications."""

    def __init__(self, pool: asyncpg.Pool, feed: ChangeFeed, *, ttl_s: float) -> None:
        super().__init__("memberships", feed, ttl_s)
        self._pool = pool
        if self.enabled:
            feed.subscribe(orgs.MEMBERSHIP_CHANNEL, self.invalidate, self.clear)

    async def get(self, user_id: str) -> list[Membership]:
        """The user's memberships."""

        async def load() -> list[Membership]:
            async with self._pool.acquire() as conn:
                return await orgs.memberships_of(conn, user_id)

        return await self._get(user_id, load, lambda _: True)


class SessionCache(_Cache[DeviceSession | None]):
    """Live sessions, evicted on `khala_control_sessions` notifications."""

    def __init__(self, pool: asyncpg.Pool, feed: ChangeFeed, *, ttl_s: float) -> None:
        super().__init__("sessions", feed, ttl_s)
        self._pool = pool
        if self.enabled:
            feed.subscribe(session_store.SESSION_CHANNEL, self.invalidate, self.clear)

    async def get(self, session_id: str) -> DeviceSession | None:
        """The session (None if unknown); only live ones are cached."""

        async def load() -> DeviceSession | None:
            async with self._pool.acquire() as conn:
                return await session_store.get_session(conn, session_id)

        return await self._get(session_id, load, lambda s: s is not None and s.active)
