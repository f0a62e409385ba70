"""Fixtures of runtime's integration tests.

Postgres and RabbitMQ are real (root conftest). Control and the projector are
other services, so they are replaced by test doubles of their published
surfaces: a real local aiohttp server serving a test ES256 key as JWKS, a real
in-process gRPC ControlService answering IntrospectSession from a table of
sessions the tests write, and a real in-process gRPC ProjectorAdmin answering
GetProjectionStatus from a table of checkpoints the tests write.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import grpc
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from khala_common.broker import Broker
from khala_common.db import migrate
from khala_common.grpc_server import GrpcServer
from khala_common.settings import DEFAULT_PARTITIONS
from khala_common.topology import TYPE_HEADER, Topology
from khala_runtime.app import Started, start
from khala_runtime.domain.model import CreateRun, CreateWorker
from khala_runtime.handlers.context import service_key, worker_service_key
from khala_runtime.settings import Settings
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA
from openagents.control.v1 import control_service_pb2 as cpb
from openagents.control.v1 import control_service_pb2_grpc
from openagents.runtime.v1.events_pb2 import RuntimeEvent, RuntimeEventBatch
from openagents.sync.v1 import projector_admin_pb2 as ppb
from openagents.sync.v1 import projector_admin_pb2_grpc

SERVICE_TOKEN = "runtime-test-service-token"
ISSUER = "https://control.test"
ROLES = {
    "viewer": cpb.ROLE_VIEWER,
    "member": cpb.ROLE_MEMBER,
    "admin": cpb.ROLE_ADMIN,
    "owner": cpb.ROLE_OWNER,
}


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


class ProjectorDouble(projector_admin_pb2_grpc.ProjectorAdminServicer):
    """GetProjectionStatus over a table of checkpoints; `failing` makes it refuse."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, int] = {}
        self.failing = False
        self.requests: list[ppb.GetProjectionStatusRequest] = []

    async def GetProjectionStatus(
        self, request: ppb.GetProjectionStatusRequest, context: Any
    ) -> ppb.GetProjectionStatusResponse:
        self.requests.append(request)
        if self.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "projector double is failing")
        statuses = []
        for head in request.streams:
            checkpoint = self.checkpoints.get(head.stream_id, 0)
            lag = max(0, head.head_seq - checkpoint)
            statuses.append(
                ppb.ProjectionStatus(
                    stream_id=head.stream_id,
                    state=ppb.PROJECTION_STATE_IN_SYNC
                    if lag == 0
                    else ppb.PROJECTION_STATE_LAGGING,
                    checkpoint_seq=checkpoint,
                    lag_events=lag,
                )
            )
        return ppb.GetProjectionStatusResponse(statuses=statuses)


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
        self,
        user_id: str,
        session_id: str,
        *,
        ttl_s: int = 900,
        audience: str = "khala-api",
        issuer: str = ISSUER,
        surface: str = "desktop",
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": user_id,
            "sid": session_id,
            "did": "dev-1",
            "surface": surface,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def login(
        self, memberships: dict[str, str], *, active: bool = True, surface: str = "desktop"
    ) -> str:
        """A token of a new user/session with `memberships` (org -> role) on `surface`."""
        user_id = f"user_{uuid.uuid4().hex[:8]}"
        session_id = f"sess_{uuid.uuid4().hex[:8]}"
        self.control.sessions[session_id] = Session(user_id, active, dict(memberships))
        return self.token(user_id, session_id, surface=surface)


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
    server.add(
        control_service_pb2_grpc.add_ControlServiceServicer_to_server,
        double,
        ["openagents.control.v1.ControlService"],
    )
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
async def projector() -> AsyncIterator[tuple[ProjectorDouble, str]]:
    """(double, gRPC target) of a ProjectorAdmin double on an ephemeral port."""
    double = ProjectorDouble()
    server = GrpcServer("127.0.0.1", 0, SERVICE_TOKEN)
    server.add(
        projector_admin_pb2_grpc.add_ProjectorAdminServicer_to_server,
        double,
        ["openagents.sync.v1.ProjectorAdmin"],
    )
    await server.start()
    yield double, f"127.0.0.1:{server.port}"
    await server.stop(0)


@pytest.fixture(scope="session")
async def projector_queues(amqp_url: str, topology: Topology) -> None:
    """The projector's partition queues on the session topology, as a deployed
    projector declares them: the relay's publishes are mandatory."""
    broker = Broker(amqp_url, topology)
    await broker.connect()
    try:
        await broker.declare_exchanges()
        for partition in range(DEFAULT_PARTITIONS):
            await broker.declare_projector_queue(5, partition)
    finally:
        await broker.close()


@pytest.fixture(scope="session")
def settings_for(
    migrated: str, amqp_url: str, topology: Topology, projector: Any, projector_queues: None
) -> Any:
    def make(control_url: str, control_target: str, **extra: str) -> Settings:
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
                "KHALA_PROJECTOR_GRPC_TARGET": projector[1],
                "KHALA_PROJECTOR_TIMEOUT_S": "2",
                "KHALA_HEARTBEAT_STALE_AFTER_MS": "60000",
                **extra,
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
        self,
        method: str,
        path: str,
        token: str | None,
        body: Any = None,
        *,
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


@dataclass
class LiveRuntime:
    """A runtime (with its control and projector doubles) serving from a thread."""

    base_url: str
    token: str
    org_id: str
    own: dict[str, str]
    """An existing run_id / worker_id of `org_id`."""
    foreign: dict[str, str]
    """An existing run_id / worker_id of another org."""


async def _start_stack(settings_for: Any) -> tuple[LiveRuntime, Callable[[], Awaitable[None]]]:
    """Control double, projector double and runtime, all in the running loop."""
    double = ControlDouble()
    identity = Identity(double)
    projector_double = ProjectorDouble()
    grpc_doubles = GrpcServer("127.0.0.1", 0, SERVICE_TOKEN)
    grpc_doubles.add(
        control_service_pb2_grpc.add_ControlServiceServicer_to_server,
        double,
        ["openagents.control.v1.ControlService"],
    )
    grpc_doubles.add(
        projector_admin_pb2_grpc.add_ProjectorAdminServicer_to_server,
        projector_double,
        ["openagents.sync.v1.ProjectorAdmin"],
    )
    await grpc_doubles.start()

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(identity.jwks())

    jwks_app = web.Application()
    jwks_app.router.add_get("/.well-known/jwks.json", jwks)
    jwks_runner = web.AppRunner(jwks_app)
    await jwks_runner.setup()
    await web.TCPSite(jwks_runner, "127.0.0.1", 0).start()
    target = f"127.0.0.1:{grpc_doubles.port}"
    runtime = await start(
        settings_for(
            f"http://127.0.0.1:{jwks_runner.addresses[0][1]}",
            target,
            KHALA_PROJECTOR_GRPC_TARGET=target,
        )
    )
    suffix = uuid.uuid4().hex[:6]
    org, other = f"contract{suffix}", f"foreign{suffix}"
    own = {"run_id": f"run-own-{suffix}", "worker_id": f"w-own-{suffix}"}
    foreign = {"run_id": f"run-foreign-{suffix}", "worker_id": f"w-foreign-{suffix}"}
    for owner, ids in ((org, own), (other, foreign)):
        await runtime.app[service_key].create_run(CreateRun(owner, ids["run_id"], ""))
        await runtime.app[worker_service_key].create_or_reattach(
            CreateWorker(owner, ids["worker_id"])
        )
    live = LiveRuntime(
        f"http://127.0.0.1:{runtime.http_port}", identity.login({org: "member"}), org, own, foreign
    )

    async def stop() -> None:
        await runtime.stop()
        await jwks_runner.cleanup()
        await grpc_doubles.stop(0)

    return live, stop


@pytest.fixture(scope="module")
def threaded_runtime(settings_for: Any) -> Iterator[LiveRuntime]:
    """A runtime serving from its own thread and event loop, for synchronous
    clients (schemathesis) that block the test's event loop while they call."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="threaded-runtime", daemon=True)
    thread.start()
    live, stop = asyncio.run_coroutine_threadsafe(_start_stack(settings_for), loop).result(60)
    try:
        yield live
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def events_of(message: aio_pika.abc.AbstractIncomingMessage) -> list[RuntimeEvent]:
    """The events a `khala.runtime.events` message carries (a batch, or one event)."""
    headers = message.headers or {}
    if headers.get(TYPE_HEADER) == RuntimeEventBatch.DESCRIPTOR.full_name:
        return list(RuntimeEventBatch.FromString(message.body).events)
    return [RuntimeEvent.FromString(message.body)]


class Tap:
    """A test queue bound to `khala.runtime.events`, consumed in the background.

    `events` are the carried events in arrival order (only `org`'s, if given), and
    `carriers[i]` is the message that carried `events[i]`."""

    def __init__(self, org: str | None = None) -> None:
        self._org = org
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.events: list[RuntimeEvent] = []
        self.carriers: list[aio_pika.abc.AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        self.messages.append(message)
        for event in events_of(message):
            if self._org is None or event.org_id == self._org:
                self.events.append(event)
                self.carriers.append(message)
        self._arrived.set()

    async def take(self, count: int, timeout_s: float = 15.0) -> list[RuntimeEvent]:
        """The first `count` events received so far (waiting for them)."""
        async with asyncio.timeout(timeout_s):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events[:count]

    async def take_until(
        self, done: Callable[[list[RuntimeEvent]], bool], timeout_s: float = 30.0
    ) -> list[RuntimeEvent]:
        """Wait until `done(every event so far)`; all events."""
        async with asyncio.timeout(timeout_s):
            while True:
                if done(self.events):
                    return list(self.events)
                self._arrived.clear()
                await self._arrived.wait()


@pytest.fixture
async def open_tap(
    amqp_url: str, topology: Topology
) -> AsyncIterator[Callable[..., Awaitable[Tap]]]:
    """`await open_tap(routing_key, topology=..., org=...)`: a Tap on `khala.runtime.events`."""
    connection = await aio_pika.connect(amqp_url)

    async def open_one(routing_key: str, topo: Topology = topology, org: str | None = None) -> Tap:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            topo.runtime_events, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=routing_key)
        tap = Tap(org)
        await queue.consume(tap.on_message)
        return tap

    yield open_one
    await connection.close()


__all__ = ["Api", "Identity", "LiveRuntime", "Tap", "grpc"]
