"""Process entry helpers: run an aiohttp app until SIGTERM/SIGINT.

Shutdown order is the composition root's: aiohttp runs the app's
on_shutdown hooks, then cleanup contexts in reverse, so every background task
is cancelled and awaited by its owner before the process exits.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Protocol, Self

from aiohttp import web

from khala_common.logs import get_logger


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_signal: Callable[[], Awaitable[None]] | None = None,
    shutdown_timeout_s: float = 10.0,
) -> None:
    """Serve `app` until a termination signal, then shut it down gracefully."""
    log = get_logger("runner")
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout_s, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("listening", addresses=[str(a) for a in runner.addresses])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
        if on_signal is not None:
            await on_signal()
    finally:
        await runner.cleanup()
        log.info("stopped")


class Service(Protocol):
    """What every service's composition root (`khala_<service>.app`) is: built from
    its settings, started once, stopped once (docs/architecture.md, "One shape")."""

    async def start(self) -> None:
        """Open pools and connections, bind ports, start background tasks."""

    async def stop(self) -> None:
        """Undo `start` in reverse order; safe after a partial start."""


async def run_service(service: Service) -> None:
    """Start `service`, run it until SIGTERM/SIGINT, then stop it."""
    log = get_logger("runner")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await service.stop()
        log.info("stopped")


class StackedService:
    """Base of the composition roots: `start` opens every resource on one
    AsyncExitStack (`_start`), and on a failure closes what was opened;
    `close_stack` closes it all in reverse order, once. `async with` starts and
    stops the service (`stop` is each service's own)."""

    _stack: AsyncExitStack | None = None

    async def _start(self, stack: AsyncExitStack) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Open every resource and start serving; on failure, close what was opened."""
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def close_stack(self) -> bool:
        """Close what `start` opened, in reverse order; False if nothing was open."""
        if self._stack is None:
            return False
        stack, self._stack = self._stack, None
        await stack.aclose()
        return True
