"""The event loop every Khala service process runs on.

Services run on uvloop: under the pipeline benchmark it cut the asyncio share
of each process's CPU (selector, handles, transports) markedly; see
docs/pipeline.md. Tools and tests may keep the default loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
