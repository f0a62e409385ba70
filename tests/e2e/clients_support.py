"""Helpers of the client e2e tests (test_clients_*.py, test_dashboard*.py).

Kept apart from conftest.py: a stack with extra settings, writers that append
numbered lines, and a gateway restart that does not block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from khala_client import KhalaApi
from khala_common.broker import delete_prefixed
from khala_common.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from stack import Stack  # noqa: E402

# Short-lived sync tokens (the minimum control allows is 10 s) and a quick drain,
# so token refresh and Reconnect handling happen within a test's time.
FAST_ENV = {
    "KHALA_SYNC_TOKEN_TTL_S": "20",
    "KHALA_GATEWAY_TOKEN_EXPIRY_GRACE_S": "2",
    "KHALA_GATEWAY_DRAIN_RETRY_MS": "300",
    "KHALA_GATEWAY_DRAIN_JITTER_MS": "700",
    "KHALA_GATEWAY_HEARTBEAT_INTERVAL_MS": "2000",
}


@contextlib.asynccontextmanager
async def running_stack(
    database_url: str, amqp_url: str, request: pytest.FixtureRequest, extra_env: dict[str, str]
) -> AsyncIterator[Stack]:
    """The four services with `extra_env`, stopped and their broker objects removed afterwards."""
    prefix = f"e2e.{uuid.uuid4().hex[:8]}."
    log_dir = ARTIFACTS / "e2e" / request.module.__name__.rsplit(".", 1)[-1]
    stack = Stack.with_free_ports(
        database_url=database_url,
        amqp_url=amqp_url,
        amqp_prefix=prefix,
        log_dir=log_dir,
        extra_env=extra_env,
    )
    try:
        await asyncio.to_thread(stack.start_all)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
        await delete_prefixed(amqp_url, Topology(prefix))


async def restart_gateway(stack: Stack, sig: int = signal.SIGTERM) -> None:
    """Stop the gateway with `sig` (SIGTERM drains with Reconnect) and start it again."""
    await asyncio.to_thread(stack.restart, "gateway", sig)


def line_text(i: int) -> str:
    """The text of numbered line `i`."""
    return f"line {i:04d}"


async def append_lines(
    api: KhalaApi, run_id: str, start: int, count: int, *, batch: int = 5, pause_s: float = 0.05
) -> None:
    """Append `run.output` lines start..start+count-1 in small keyed batches (retries are idempotent)."""
    i = start
    while i < start + count:
        size = min(batch, start + count - i)
        events = [
            {
                "type": "run.output",
                "payload": {"text": line_text(n)},
                "idempotency_key": f"line-{n}",
            }
            for n in range(i, i + size)
        ]
        await api.append_events(run_id, events)
        i += size
        await asyncio.sleep(pause_s)


class LineWriter:
    """Appends numbered lines in a task until `finish()`, then a last few."""

    def __init__(
        self, api: KhalaApi, run_id: str, *, start: int = 0, batch: int = 2, pause_s: float = 0.05
    ) -> None:
        self.api = api
        self.run_id = run_id
        self.batch = batch
        self.pause_s = pause_s
        self.written = start
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            await append_lines(
                self.api,
                self.run_id,
                self.written,
                self.batch,
                batch=self.batch,
                pause_s=self.pause_s,
            )
            self.written += self.batch

    async def finish(self, tail: int = 10) -> int:
        """Stop after `tail` more lines; returns the number of the next line (lines written from 0)."""
        self._stop.set()
        await self.task
        await append_lines(
            self.api, self.run_id, self.written, tail, batch=self.batch, pause_s=self.pause_s
        )
        self.written += tail
        return self.written


async def new_user(stack: Stack, http: object, *, surface: str = "desktop") -> tuple[KhalaApi, str]:
    """A signed-in user with an org of their own."""
    api = KhalaApi(stack.url("control"), stack.url("runtime"), http)  # type: ignore[arg-type]
    tag = uuid.uuid4().hex[:8]
    await api.sign_in_dev(
        f"user-{tag}@example.com", f"User {tag}", device_id=f"dev-{tag}", surface=surface
    )
    org = f"org-{tag}"
    await api.create_org(org, f"Org {tag}")
    return api, org
