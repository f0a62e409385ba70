"""Fixtures of runtime's integration tests.

Postgres and RabbitMQ are real (root conftest). Control is another service
built in parallel, so it is replaced by a test double of its two published
surfaces: a real local aiohttp server serving a test ES256 key as JWKS, and a
real in-process gRPC ControlService answering IntrospectSession from a table
of sessions the tests write.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from khala_common.db import migrate
from khala_common.grpc_server import GrpcServer
from khala_common.topology import Topology
from khala_runtime.app import Started, start
from khala_runtime.settings import Settings
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA
from openagents.control.v1 import control_service_pb2 as cpb
from openagents.control.v1 import control_service_pb2_grpc

SERVICE_TOKEN = "runtime-test-service-token"
ISSUER = "https://control.test"
ROLES = {"viewer": cpb.ROLE_VIEWER, "member": cpb.ROLE_MEMBER, "admin": cpb.ROLE_ADMIN,
         "owner": cpb.ROLE_OWNER}


@dataclass
class Session:
    user_id: str
    active: bool = True
    memberships: dict[str, str] = field(default_factory=dict)


class ControlDouble(control_service_pb2_grpc.ControlServiceServicer):
    """IntrospectSession over a table of sessions; counts calls."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.calls = 0

    async def IntrospectSession(
        self, request: cpb.IntrospectSessionRequest, context: Any
    ) -> cpb.IntrospectSessionResponse:
        self.calls += 1
        session = self.sessions.get(request.session_id)
        if session is None:
            return cpb.IntrospectSessionResponse(active=False, session_id=request.session_id)
        return cpb.IntrospectSessionResponse(
            active=session.active,
            session_id=request.session_id,
            user_id=session.user_id,
            device_id="dev-1",
            memberships=[
                cpb.Membership(org_id=org, role=ROLES[role])
                for org, role in session.memberships.items()
            ],
        )


class Identity:
    """Signs access tokens with a test ES256 key and registers sessions."""

    def __init__(self, control: ControlDouble) -> None:
        self.control = control
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = f"test-{uuid.uuid4().hex[:6]}"

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        return {"keys": [jwk]}

    def token(
        self, user_id: str, session_id: str, *, ttl_s: int = 900, audience: str = "khala-api",
        issuer: str = ISSUER,
    ) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "sub": user_id, "sid": session_id,
                  "did": "dev-1", "surface": "desktop", "iat": now - 5, "nbf": now - 5,
                  "exp": now + ttl_s, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def login(self, memberships: dict[str, str], *, active: bool = True) -> str:
        """A token of a new user/session with `memberships` (org -> role)."""
        user_id = f"user_{uuid.uuid4().hex[:8]}"
        session_id = f"sess_{uuid.uuid4().hex[:8]}"
        self.control.sessions[session_id] = Session(user_id, active, dict(memberships))
        return self.token(user_id, session_id)


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    migrate(database_url, SCHEMA, MIGRATIONS_DIR)
    return database_url


@pytest.fixture(scope="session")
async def control() -> AsyncIterator[tuple[ControlDouble, Identity, str, str]]:
    """(double, identity, control base URL, gRPC target), all on ephemeral ports."""
    double = ControlDouble()
    identity = Identity(double)
    server = GrpcServer("127.0.0.1", 0, SERVICE_TOKEN)
    server.add(control_service_pb2_grpc.add_ControlServiceServicer_to_server, double,
               ["openagents.control.v1.ControlService"])
    await server.start()

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(identity.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield double, identity, url, f"127.0.0.1:{server.port}"
    await runner.cleanup()
    await server.stop(0)


@pytest.fixture(scope="session")
def settings_for(migrated: str, amqp_url: str, topology: Topology) -> Any:
    def make(control_url: str, control_target: str) -> Settings:
        return Settings.from_env(
            {
                "KHALA_DATABASE_URL": migrated,
                "KHALA_AMQP_URL": amqp_url,
                "KHALA_AMQP_PREFIX": topology.prefix,
                "KHALA_SERVICE_TOKEN": SERVICE_TOKEN,
                "KHALA_RUNTIME_HTTP_PORT": "0",
                "KHALA_RUNTIME_GRPC_PORT": "0",
                "KHALA_CONTROL_URL": control_url,
                "KHALA_TOKEN_ISSUER": ISSUER,
                "KHALA_CONTROL_GRPC_TARGET": control_target,
                "KHALA_MAX_BODY_BYTES": str(64 * 1024),
                "KHALA_OUTBOX_POLL_INTERVAL_S": "0.2",
            }
        )

    return make


@pytest.fixture(scope="session")
async def runtime(control: Any, settings_for: Any) -> AsyncIterator[Started]:
    """One runtime for the session (HTTP and gRPC on ephemeral ports)."""
    _, _, url, target = control
    started = await start(settings_for(url, target))
    yield started
    await started.stop()


@pytest.fixture(scope="session")
def identity(control: Any) -> Identity:
    return control[1]


class Api:
    """A small HTTP client of the runtime API."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self, method: str, path: str, token: str | None, body: Any = None, *,
        data: bytes | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if data is not None:
            kwargs["data"] = data
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as response:
            text = await response.text()
            parsed = json.loads(text) if text else None
            return response.status, parsed, dict(response.headers)


@pytest.fixture
async def api(runtime: Started) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{runtime.http_port}")


@pytest.fixture
def grpc_target(runtime: Started) -> Iterator[str]:
    yield f"127.0.0.1:{runtime.grpc_port}"


@pytest.fixture
def service_metadata() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {SERVICE_TOKEN}"),)


__all__ = ["Api", "Identity", "grpc"]
