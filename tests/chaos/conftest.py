"""Chaos fixtures: the four services as processes on free ports, with their own
database and broker prefix (as the e2e tests start them), tuned so that dead
sockets are noticed quickly and many sockets may share one user.

Tests marked `chaos` (broker and Postgres restarts, which disturb everything else
using those shared servers) run only when selected explicitly with `-m chaos`.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from stack import Stack  # noqa: E402

from khala_common.broker import delete_prefixed  # noqa: E402
from khala_common.topology import Topology  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts" / "chaos"

CHAOS_ENV = {
    "KHALA_GATEWAY_MAX_CONNECTIONS_PER_USER": "100000",
    "KHALA_GATEWAY_HEARTBEAT_INTERVAL_MS": "2000",
    "KHALA_GATEWAY_DRAIN_RETRY_MS": "200",
    "KHALA_GATEWAY_DRAIN_JITTER_MS": "800",
    "KHALA_GATEWAY_HEAD_POLL_INTERVAL_S": "1",
    "KHALA_RATE_LIMIT_SIGN_IN": "off",
    "KHALA_RATE_LIMIT_REFRESH": "off",
    "KHALA_RATE_LIMIT_MINT": "off",
    "KHALA_LOG_LEVEL": "warning",
}


def explicitly_selected(config: pytest.Config, marker: str) -> bool:
    """Whether `-m` names `marker` positively (e.g. `-m chaos`, not `-m "not chaos"`)."""
    expr = str(config.getoption("markexpr") or "")
    return marker in expr.replace(f"not {marker}", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: long chaos test; restarts the shared broker and Postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if explicitly_selected(config, "chaos"):
        return
    skip = pytest.mark.skip(reason="restarts shared servers: run with -m chaos (make test-chaos)")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
async def chaos_database(pg_server_url: str) -> AsyncIterator[str]:
    """A database of its own for one chaos module."""
    name = f"khala_chaos_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, _ = pg_server_url.rpartition("/")
    yield f"{base}/{name}"
    for _ in range(30):  # Postgres may be restarting (long test)
        try:
            conn = await asyncpg.connect(pg_server_url)
            break
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(1)
    else:
        return
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.close()


@pytest.fixture(scope="module")
async def chaos_stack(
    chaos_database: str, amqp_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The four services, running; stopped and their broker objects deleted afterwards."""
    prefix = f"chaos.{uuid.uuid4().hex[:8]}."
    log_dir = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1]
    running = Stack.with_free_ports(
        database_url=chaos_database,
        amqp_url=amqp_url,
        amqp_prefix=prefix,
        log_dir=log_dir,
        extra_env=dict(CHAOS_ENV),
    )
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
        await delete_prefixed(amqp_url, Topology(prefix))
