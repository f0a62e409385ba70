"""Chaos fixtures: the four services as processes on free ports, with their own
database and broker prefix (as the e2e tests start them), tuned so that dead
sockets are noticed quickly and many sockets may share one user.

Tests marked `chaos` (the long run) and `chaos_ci` run only when selected
explicitly with `-m chaos` / `-m chaos_ci`.
`private_stack` runs the services on a Postgres and a RabbitMQ of the test's own
(scripts/servers.py), which the test may SIGKILL and restart freely.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from servers import PrivatePostgres, PrivateRabbitMQ  # noqa: E402
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
    words = expr.replace("(", " ").replace(")", " ").split()
    return any(w == marker and (i == 0 or words[i - 1] != "not") for i, w in enumerate(words))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: long chaos test (private servers; ten minutes)")
    config.addinivalue_line(
        "markers", "chaos_ci: chaos on private servers (make test-chaos-ci, part of .ci/run)"
    )


SKIP_REASONS = {
    "chaos": "ten minutes of chaos: run with -m chaos (make test-chaos)",
    "chaos_ci": "a few minutes of chaos on private servers: run with -m chaos_ci (make test-chaos-ci)",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, reason in SKIP_REASONS.items():
        if explicitly_selected(config, marker):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker):
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
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )
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


@dataclass
class PrivateServers:
    """A Postgres and a RabbitMQ only this test uses: `crash` faults SIGKILL and restart them."""

    postgres: PrivatePostgres
    rabbitmq: PrivateRabbitMQ


@pytest.fixture(scope="module")
def private_servers() -> Iterator[PrivateServers]:
    """Private Postgres and RabbitMQ, started now, killed and removed at the end."""
    postgres, rabbitmq = PrivatePostgres(), PrivateRabbitMQ()
    try:
        postgres.start()
        rabbitmq.start()
        yield PrivateServers(postgres, rabbitmq)
    finally:
        postgres.close()
        rabbitmq.close()


@pytest.fixture(scope="module")
async def private_stack(
    private_servers: PrivateServers, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The four services on the private servers; stopped afterwards (the servers go with them)."""
    conn = await asyncpg.connect(private_servers.postgres.url)
    await conn.execute('CREATE DATABASE "khala"')
    await conn.close()
    base, _, _ = private_servers.postgres.url.rpartition("/")
    log_dir = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1]
    running = Stack.with_free_ports(
        database_url=f"{base}/khala",
        amqp_url=private_servers.rabbitmq.url,
        amqp_prefix="chaos.",
        log_dir=log_dir,
        extra_env=dict(CHAOS_ENV),
    )
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
