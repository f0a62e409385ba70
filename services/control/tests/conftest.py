"""Fixtures of control's tests: a migrated schema, a running ControlApp on
ephemeral ports (real Postgres and RabbitMQ), and a small HTTP client."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aiohttp
import asyncpg
import pytest
from control_testkit import OidcIssuer

from khala_common.db import migrate
from khala_common.topology import Topology
from khala_control.app import ControlApp
from khala_control.domain.rate_limit import RateLimitSettings
from khala_control.domain.surfaces import DEFAULT_MATRIX_SPEC, SurfacePolicy
from khala_control.settings import SCHEMA, Settings
from khala_control.storage import MIGRATIONS_DIR
from openagents.control.v1 import revocation_pb2


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    """The session database with the control schema migrated."""
    migrate(database_url, SCHEMA, MIGRATIONS_DIR)
    return database_url


@pytest.fixture
async def empty_database(pg_server_url: str) -> AsyncIterator[str]:
    """A new migrated database of its own (dropped after the test)."""
    name = f"khala_ctl_keys_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_server_url)
    dsn = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    try:
        await asyncio.to_thread(migrate, dsn, SCHEMA, MIGRATIONS_DIR)
        yield dsn
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


@pytest.fixture(scope="session")
def control_settings(migrated_database_url: str, amqp_url: str, topology: Topology) -> Settings:
    """Settings for an in-process control: ephemeral ports, issuer = bound URL, dev IdP on."""
    return Settings(
        database_url=migrated_database_url,
        amqp_url=amqp_url,
        amqp_prefix=topology.prefix,
        service_token="test-service-token",
        http_port=0,
        grpc_port=0,
        token_issuer=None,
        dev_idp_enabled=True,
        signing_key_refresh_s=0.0,
        revocation_poll_s=0.2,
        surfaces=SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC, "ios=2.0.0"),
        # Every test signs in from 127.0.0.1: limits are tested on apps of their own.
        rate_limits=RateLimitSettings(),
    )


@pytest.fixture(scope="session")
async def control(control_settings: Settings) -> AsyncIterator[ControlApp]:
    """One running control service shared by the session's tests."""
    async with ControlApp(control_settings) as app:
        yield app


class Client:
    """JSON calls against one control instance."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.http = http

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(
            method, self.base_url + path, json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    async def ok(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> Any:
        status, data = await self.call(method, path, body, token=token)
        assert status < 300, (status, data)
        return data

    async def join(
        self, org: str, inviter: dict[str, Any], invitee: dict[str, Any], role: str
    ) -> Any:
        """Add `invitee` to `org` the only way there is: `inviter` invites them by
        user id, they accept; the accept's answer."""
        invitation = await self.ok(
            "POST",
            f"/api/orgs/{org}/invitations",
            {"user_id": invitee["user_id"], "role": role},
            token=inviter["access_token"],
        )
        return await self.ok(
            "POST",
            f"/api/invitations/{invitation['invitation_id']}/accept",
            token=invitee["access_token"],
        )

    async def sign_in(
        self, email: str, *, device_id: str = "laptop", surface: str = "desktop"
    ) -> dict[str, Any]:
        """Dev IdP ID token → device session body."""
        issued = await self.ok("POST", "/api/dev/id-token", {"email": email, "name": "Test"})
        return await self.ok(  # type: ignore[no-any-return]
            "POST",
            "/api/auth/session",
            {
                "id_token": issued["id_token"],
                "device_id": device_id,
                "surface": surface,
                "client_version": "1.0.0",
            },
        )


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(control: ControlApp, http: aiohttp.ClientSession) -> Client:
    return Client(control.base_url, http)


@pytest.fixture
def email() -> str:
    """A unique email address."""
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def make_client() -> type[Client]:
    """The Client class, for tests that start their own ControlApp."""
    return Client


class RevocationQueue:
    """An exclusive queue bound to `khala.control` (all three revocation keys)."""

    def __init__(self, queue: aio_pika.abc.AbstractQueue) -> None:
        self.queue = queue

    async def wait_for(
        self, session_id: str, timeout_s: float = 10.0
    ) -> aio_pika.abc.AbstractIncomingMessage:
        """The first message whose Revocation names `session_id` (others are skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            message = await self.queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            revocation = revocation_pb2.Revocation.FromString(message.body)
            if session_id in revocation.session_ids:
                return message
        raise AssertionError(f"no Revocation for {session_id} within {timeout_s}s")


@pytest.fixture
async def revocations(amqp_url: str, topology: Topology) -> AsyncIterator[RevocationQueue]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        topology.control, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    for key in ("session.revoked", "device.revoked", "user.revoked"):
        await queue.bind(exchange, routing_key=key)
    try:
        yield RevocationQueue(queue)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def oidc_issuer() -> AsyncIterator[OidcIssuer]:
    """A local OIDC issuer shared by the session (tests that change it start their own)."""
    issuer = await OidcIssuer().start()
    try:
        yield issuer
    finally:
        await issuer.stop()


@pytest.fixture(scope="session")
async def oidc_control(
    control_settings: Settings, oidc_issuer: OidcIssuer
) -> AsyncIterator[ControlApp]:
    """A control that trusts only the local OIDC issuer (dev IdP off)."""
    settings = dataclasses.replace(
        control_settings,
        dev_idp_enabled=False,
        oidc_issuers=(oidc_issuer.issuer,),
        oidc_jwks_min_refetch_s=0.0,  # tests add keys to the shared issuer
    )
    async with ControlApp(settings) as app:
        yield app
