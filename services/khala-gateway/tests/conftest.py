"""Fixtures of the gateway's integration tests: the khala schema (the projector's
migrations), a frame writer that behaves like the projector (commit the frame,
then publish its bytes to khala.fanout), a real ES256 JWKS server, running
gateways on ephemeral ports and a WebSocket client (helpers in gateway_testkit)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gateway_testkit import (
    MIGRATIONS,
    SERVICE_TOKEN,
    Client,
    FrameWriter,
    Issuer,
    RevokedSessionsServicer,
    gateway_settings,
)

from khala_common.broker import Broker
from khala_common.db import create_pool, migrate
from khala_common.grpc_server import GrpcServer
from khala_common.topology import Topology
from khala_gateway.app import GatewayServer
from openagents.control.v1 import control_service_pb2_grpc


@pytest.fixture(scope="session")
def khala_dsn(database_url: str) -> str:
    """The session database with the projector's khala schema migrated."""
    migrate(database_url, "khala", MIGRATIONS)
    return database_url


@pytest.fixture(scope="session")
async def broker(amqp_url: str, topology: Topology) -> AsyncIterator[Broker]:
    b = Broker(amqp_url, topology)
    await b.connect()
    await b.declare_exchanges()
    yield b
    await b.close()


@pytest.fixture(scope="session")
async def writer(khala_dsn: str, broker: Broker) -> AsyncIterator[FrameWriter]:
    pool = await create_pool(khala_dsn, "khala")
    yield FrameWriter(pool, broker)
    await pool.close()


@pytest.fixture(scope="session")
async def issuer() -> AsyncIterator[Issuer]:
    iss = Issuer()

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(iss.jwks)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    iss.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    grpc_server = GrpcServer("127.0.0.1", 0, SERVICE_TOKEN)
    grpc_server.add(
        control_service_pb2_grpc.add_ControlServiceServicer_to_server,
        RevokedSessionsServicer(iss),
        ["openagents.control.v1.ControlService"],
    )
    await grpc_server.start()
    iss.grpc_target = f"127.0.0.1:{grpc_server.port}"
    yield iss
    await grpc_server.stop(0.5)
    await runner.cleanup()


@pytest.fixture
def make_gateway(
    khala_dsn: str, amqp_url: str, topology: Topology, issuer: Issuer
) -> Callable[..., Any]:
    """`async with make_gateway(**settings) as server:` runs a dedicated gateway."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[GatewayServer]:
        server = GatewayServer(gateway_settings(khala_dsn, amqp_url, topology, issuer, **overrides))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    return factory


@pytest.fixture(scope="session")
async def gateway(
    khala_dsn: str, amqp_url: str, topology: Topology, issuer: Issuer
) -> AsyncIterator[GatewayServer]:
    """The shared gateway (head poll 0.3 s, hello timeout 1 s)."""
    server = GatewayServer(gateway_settings(khala_dsn, amqp_url, topology, issuer))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """`await connect(server, json=False, protocols=None)` opens a socket (closed at teardown)."""
    session = aiohttp.ClientSession()
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def open_socket(
        server: GatewayServer, *, json: bool = False, protocols: tuple[str, ...] | None = None
    ) -> Client:
        if protocols is None:
            protocols = ("khala.v1+json",) if json else ("khala.v1+proto",)
        ws = await session.ws_connect(
            f"http://127.0.0.1:{server.http_port}/v1/ws",
            protocols=protocols,
            max_msg_size=0,
            autoping=True,
        )
        sockets.append(ws)
        return Client(ws, json)

    yield open_socket
    for ws in sockets:
        await ws.close()
    await session.close()
