"""Shared test fixtures: real Postgres and RabbitMQ for every integration test.

Servers come from KHALA_TEST_DATABASE_URL / KHALA_TEST_AMQP_URL when set (CI
sets them to the machine's servers), else from testcontainers (needs Docker).
Each test session creates its own database and a unique exchange/queue
prefix, and removes both at the end, so sessions sharing servers never meet.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, settings

from khala_common.broker import delete_prefixed
from khala_common.topology import Topology

RUN_ID = uuid.uuid4().hex[:10]

# Hypothesis profiles (loaded here, before any test module builds its settings):
# `ci` (default) is derandomized, so every run of `make test` tries the same
# examples and a failure reproduces; `local` explores new random examples, more
# of them (HYPOTHESIS_PROFILE=local make test-unit). Tests that set max_examples
# keep their own count under both.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "local",
    derandomize=False,
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("KHALA_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("KHALA_TEST_AMQP_URL")
    if url:
        yield url
        return
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management-alpine") as container:
        params = container.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    name = f"khala_test_{RUN_ID}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield _with_database(pg_server_url, name)
    finally:
        asyncio.run(drop())


@pytest.fixture(scope="session")
def topology(amqp_url: str) -> Iterator[Topology]:
    """A unique exchange/queue prefix for this test session, deleted at the end."""
    topo = Topology(prefix=f"test.{RUN_ID}.")
    try:
        yield topo
    finally:
        asyncio.run(delete_prefixed(amqp_url, topo))


@pytest.fixture
def unique() -> str:
    """A short unique id for org/run/worker names within the shared session database."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def fresh_topology(amqp_url: str) -> AsyncIterator[Topology]:
    """A per-test prefix, for tests that need their own broker state."""
    topo = Topology(prefix=f"test.{RUN_ID}.{uuid.uuid4().hex[:6]}.")
    yield topo
    await delete_prefixed(amqp_url, topo)
