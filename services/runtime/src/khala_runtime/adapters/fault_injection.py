"""Fault injection for tests only (off unless a KHALA_RUNTIME_TEST_* setting asks for it).

`CrashBeforeConfirm` stands in for the relay's broker: its nth `publish_raw`
starts the publish (the outbox rows are committed and their message is on its
way to RabbitMQ) and then SIGKILLs the process before the confirm is handled
and before the rows are marked published. The chaos test uses it to prove that
a crash between outbox commit and publish confirm republishes, and that the
projector's dedupe by `stream_seq` keeps the topic logs exact.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from khala_common.broker import Broker
from khala_common.logs import get_logger

log = get_logger("fault_injection")


class CrashBeforeConfirm:
    """A Broker proxy whose `crash_at`th publish kills the process before its confirm."""

    def __init__(self, broker: Broker, crash_at: int) -> None:
        self._broker = broker
        self._crash_at = crash_at
        self._publishes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    async def publish_raw(self, *args: Any, **kwargs: Any) -> None:
        """Publish; on the `crash_at`th call, SIGKILL once the publish is under way."""
        self._publishes += 1
        if self._publishes != self._crash_at:
            return await self._broker.publish_raw(*args, **kwargs)
        publish = asyncio.ensure_future(self._broker.publish_raw(*args, **kwargs))
        await asyncio.sleep(0)  # the publish task writes its frames, then waits for the confirm
        log.warning(
            "fault injection: SIGKILL between outbox commit and publish confirm",
            publishes=self._publishes,
            confirmed=publish.done(),
        )
        os.kill(os.getpid(), signal.SIGKILL)
        await publish  # not reached
