"""Fixtures of the projector tests: a migrated khala schema, a pool for
assertions, a broker for publishing test events, and a runtime test double."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from projector_testkit import SERVICE_TOKEN, RuntimeDouble, start_runtime_double

from khala_common.broker import Broker
from khala_common.db import create_pool, migrate
from khala_common.topology import Topology
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage import MIGRATIONS_DIR


@pytest.fixture(scope="session")
def khala_dsn(database_url: str) -> Iterator[str]:
    """The session database with the khala schema migrated."""
    migrate(database_url, SCHEMA, MIGRATIONS_DIR)
    yield database_url


@pytest.fixture(scope="session")
async def khala_pool(khala_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on schema khala for the tests' own reads and writes."""
    pool = await create_pool(khala_dsn, SCHEMA)
    yield pool
    await pool.close()


@pytest.fixture
async def runtime_double() -> AsyncIterator[tuple[RuntimeDouble, str]]:
    """A RuntimeService test double and its target address."""
    double = RuntimeDouble()
    server = await start_runtime_double(double)
    yield double, f"127.0.0.1:{server.port}"
    await server.stop(0)


@pytest.fixture
async def test_broker(amqp_url: str, fresh_topology: Topology) -> AsyncIterator[Broker]:
    """A broker connection on this test's own topology, exchanges declared."""
    broker = Broker(amqp_url, fresh_topology)
    await broker.connect()
    await broker.declare_exchanges()
    yield broker
    await broker.close()


@pytest.fixture
def projector_settings(
    khala_dsn: str,
    amqp_url: str,
    fresh_topology: Topology,
    runtime_double: tuple[RuntimeDouble, str],
) -> Settings:
    """Settings of a projector on ephemeral ports wired to this test's broker and double."""
    return Settings(
        database_url=khala_dsn,
        amqp_url=amqp_url,
        amqp_prefix=fresh_topology.prefix,
        service_token=SERVICE_TOKEN,
        http_port=0,
        grpc_port=0,
        runtime_grpc_target=runtime_double[1],
        runtime_grpc_timeout_s=5.0,
        prefetch=50,
        batch_max=50,
        delivery_limit=3,
        retry_delay_ms=10,
        republish_interval_s=0.2,
        metrics_interval_s=0.2,
        # Off unless a test turns them on: the session database is shared.
        retention_interval_s=0,
        drift_interval_s=0,
    )
