"""e2e fixtures: the four services started as processes on free ports, with
their own database and broker prefix, exactly as `make run` starts them."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from stack import Stack  # noqa: E402

from khala_client import KhalaApi  # noqa: E402
from khala_common.broker import delete_prefixed  # noqa: E402
from khala_common.topology import Topology  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
async def e2e_database(pg_server_url: str) -> AsyncIterator[str]:
    """A database of its own for one e2e module."""
    name = f"khala_e2e_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, _ = pg_server_url.rpartition("/")
    yield f"{base}/{name}"
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.close()


@pytest.fixture(scope="module")
async def stack(
    e2e_database: str, amqp_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The four services, running; stopped and their broker objects deleted afterwards."""
    prefix = f"e2e.{uuid.uuid4().hex[:8]}."
    log_dir = ARTIFACTS / "e2e" / request.module.__name__.rsplit(".", 1)[-1]
    running = Stack.with_free_ports(
        database_url=e2e_database, amqp_url=amqp_url, amqp_prefix=prefix, log_dir=log_dir
    )
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
        await delete_prefixed(amqp_url, Topology(prefix))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(stack: Stack, http: aiohttp.ClientSession) -> KhalaApi:
    """A signed-in user (dev identity provider) with an org of their own."""
    client = KhalaApi(stack.url("control"), stack.url("runtime"), http)
    tag = uuid.uuid4().hex[:8]
    await client.sign_in_dev(f"user-{tag}@example.com", f"User {tag}", device_id=f"dev-{tag}")
    await client.create_org(f"org-{tag}", f"Org {tag}")
    client.org_id = f"org-{tag}"  # type: ignore[attr-defined]
    return client


@pytest.fixture
def org_id(api: KhalaApi) -> str:
    return api.org_id  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session", autouse=True)
def _artifacts_dir() -> Iterator[None]:
    ARTIFACTS.mkdir(exist_ok=True)
    yield
