"""Reference-counted bindings of this instance's fanout queue, one per topic.

A topic is bound while at least one local subscription holds it. `acquire`
returns only once the binding exists, so a subscriber that reads the topic head
afterwards cannot miss a frame published in between (it arrives live, or the
head poll / gap fill reads it from Postgres). Bind and unbind of one topic are
serialised; different topics proceed concurrently.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from khala_common.logs import get_logger
from khala_gateway import metrics

log = get_logger("khala_gateway.bindings")


class Binder(Protocol):
    """Binds and unbinds routing keys on the instance's fanout queue."""

    async def bind(self, topic: str) -> None: ...

    async def unbind(self, topic: str) -> None: ...


class _Entry:
    __slots__ = ("bound", "lock", "refs", "users")

    def __init__(self) -> None:
        self.refs = 0
        self.users = 0
        self.bound = False
        self.lock = asyncio.Lock()


class Bindings:
    """Topic -> reference count, binding on the first holder and unbinding after the last."""

    def __init__(self, binder: Binder) -> None:
        self._binder = binder
        self._entries: dict[str, _Entry] = {}

    def topics(self) -> list[str]:
        """Topics currently bound."""
        return [t for t, e in self._entries.items() if e.bound]

    async def acquire(self, topic: str) -> None:
        """Hold `topic`; binds it first if nobody held it (raises if the broker refuses)."""
        entry = self._entries.setdefault(topic, _Entry())
        entry.users += 1
        try:
            async with entry.lock:
                if not entry.bound:
                    await self._binder.bind(topic)
                    entry.bound = True
                    metrics.BOUND_TOPICS.inc()
                entry.refs += 1
        finally:
            entry.users -= 1
            self._forget_if_idle(topic, entry)

    async def release(self, topic: str) -> None:
        """Drop one hold on `topic`; unbinds it when it was the last."""
        entry = self._entries.get(topic)
        if entry is None:
            return
        entry.users += 1
        try:
            async with entry.lock:
                entry.refs -= 1
                if entry.refs <= 0 and entry.bound:
                    entry.refs = 0
                    entry.bound = False
                    metrics.BOUND_TOPICS.dec()
                    try:
                        await self._binder.unbind(topic)
                    except Exception as exc:  # an extra binding only costs dropped messages
                        log.warning("unbind failed", topic=topic, error=repr(exc))
        finally:
            entry.users -= 1
            self._forget_if_idle(topic, entry)

    def _forget_if_idle(self, topic: str, entry: _Entry) -> None:
        if entry.users == 0 and entry.refs == 0 and not entry.bound:
            if self._entries.get(topic) is entry:
                del self._entries[topic]
