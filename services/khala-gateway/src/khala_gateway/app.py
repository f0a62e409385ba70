"""Composition root: pools, broker consumers, JWKS, hub, gRPC and the HTTP/WS app.

`GatewayApp(settings)` is the gateway process (a `khala_common.runner.Service`):
`start()` builds the aiohttp application and listens; its cleanup context owns
every resource and background task (head poll, housekeeping, consumers, gRPC
server) and cancels/awaits them on `stop()`, after draining the sockets.
`GatewayServer` is the same app for tests (port 0: they read the bound ports
from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from importlib import metadata

import asyncpg
from aiohttp import web

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer, tls_of
from khala_common.http import Readiness, admin_router, make_app
from khala_common.jwt_verify import JwksCache, TokenVerifier, http_jwks_fetcher
from khala_common.logs import get_logger
from khala_common.topology import Topology
from khala_gateway.adapters.bindings import Bindings
from khala_gateway.adapters.fanout_queue import FanoutQueue
from khala_gateway.adapters.revocation_sync import RevocationSync
from khala_gateway.adapters.token_verify import SYNC_AUDIENCE, Authenticator
from khala_gateway.domain.revocations import RevokedSessions
from khala_gateway.handlers.admin import AdminHttp, GatewayAdminServicer
from khala_gateway.handlers.control_consumer import ControlConsumer
from khala_gateway.handlers.fanout_consumer import FanoutConsumer
from khala_gateway.handlers.ws_handler import WsHandler
from khala_gateway.settings import Settings
from khala_gateway.storage.topic_log import TopicLog
from khala_gateway.usecases.admission import Admission
from khala_gateway.usecases.hub import Hub
from openagents.sync.v1 import gateway_admin_pb2_grpc

log = get_logger("khala_gateway.app")

TOKEN_LEEWAY_S = 30
ADMIN_SERVICE = "openagents.sync.v1.GatewayAdmin"
# Start-up waits this long for the first revoked-session load (then goes on, not ready).
REVOCATION_LOAD_S = 5.0


def server_version() -> str:
    """The installed package version (Welcome.server_version)."""
    try:
        return metadata.version("khala-gateway")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class GatewayApp:
    """Everything one gateway process runs, built from Settings."""

    def __init__(self, settings: Settings, *, shutdown_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.shutdown_timeout_s = shutdown_timeout_s
        self.readiness = Readiness()
        self.instance_id = secrets.token_hex(4)
        self.hub: Hub | None = None
        self.revoked = RevokedSessions(settings.revoked_retention_s)
        self.revocation_sync: RevocationSync | None = None
        self.broker: Broker | None = None
        self.grpc_port: int | None = None
        self._ws: WsHandler | None = None
        self._admin: AdminHttp | None = None
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    async def start(self) -> None:
        """Set up the app (its resources) and listen on the HTTP port."""
        s = self.settings
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, shutdown_timeout=self.shutdown_timeout_s
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.bind_host, s.http_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:  # e.g. the port is taken: release what setup opened
            await self.stop()
            raise
        self.http_port = int(self._runner.addresses[0][1])
        log.info("listening", addresses=[str(a) for a in self._runner.addresses])

    async def stop(self) -> None:
        """Drain the sockets, then release every resource (safe after a partial start)."""
        await self.drain()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def build_app(self) -> web.Application:
        """The aiohttp app: /v1/ws, admin, health, readiness and metrics."""
        app = make_app(
            self.readiness,
            client_max_size=64 * 1024,
            admin_port=self.settings.admin_port,
            admin_host=self.settings.bind_host,
        )
        app.router.add_get("/v1/ws", self._ws_route)
        admin_router(app).add_get("/internal/v1/khala/fanout/metrics", self._admin_route)
        app.cleanup_ctx.append(self._resources)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _ws_route(self, request: web.Request) -> web.StreamResponse:
        assert self._ws is not None
        return await self._ws.handle(request)

    async def _admin_route(self, request: web.Request) -> web.StreamResponse:
        assert self._admin is not None
        return await self._admin.fanout_metrics(request)

    async def drain(self) -> None:
        """SIGTERM: readiness false, Reconnect + close 1012 on every socket."""
        self.readiness.draining = True
        if self.hub is not None and not self.hub.draining:
            log.info("draining", connections=len(self.hub.connections))
            await self.hub.drain()

    async def _on_shutdown(self, _: web.Application) -> None:
        await self.drain()

    async def _resources(self, _: web.Application) -> AsyncIterator[None]:
        s = self.settings
        pool: asyncpg.Pool = await create_pool(
            s.database_url, "khala", read_only=True, max_size=s.db_pool_size
        )
        broker = self.broker = Broker(s.amqp_url, Topology(prefix=s.amqp_prefix))
        grpc_server: GrpcServer | None = None
        fanout: FanoutConsumer | None = None
        control: ControlConsumer | None = None
        sync = self.revocation_sync = RevocationSync(
            s.control_grpc_target, s.service_token, self.revoked, tls=tls_of(s)
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            hub = self.hub = Hub(TopicLog(pool), s)
            jwks = JwksCache(http_jwks_fetcher(s.jwks_url))
            verifier = TokenVerifier(
                jwks,
                issuer=s.token_issuer,
                audience=SYNC_AUDIENCE,
                leeway_s=TOKEN_LEEWAY_S,
            )
            admission = Admission(Authenticator(verifier), hub, s, self.revoked)
            self._ws = WsHandler(hub, admission, s, server_version())
            topology = broker.topology
            fanout_queue = f"{topology.fanout}.gw.{self.instance_id}"
            self._admin = AdminHttp(
                hub, s.admin_token, instance=self.instance_id, fanout_queue=fanout_queue
            )
            await broker.connect()
            queue = FanoutQueue(broker, fanout_queue, s.fanout_queue_max)
            fanout = FanoutConsumer(queue, hub)
            await fanout.start()
            hub.bindings = Bindings(queue)
            control = ControlConsumer(
                broker,
                hub,
                f"{topology.control}.gw.{self.instance_id}",
                self.revoked,
                sync.request,
            )
            await control.start()
            # Listening first, then the reload: no revocation falls in between.
            tasks.append(asyncio.create_task(sync.run(), name="revocation-sync"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sync.synced.wait(), REVOCATION_LOAD_S)
            grpc_server = GrpcServer.serving(s, s.grpc_port)
            grpc_server.follow(self.readiness)
            grpc_server.add(
                gateway_admin_pb2_grpc.add_GatewayAdminServicer_to_server,
                GatewayAdminServicer(hub, instance=self.instance_id, fanout_queue=fanout_queue),
                [ADMIN_SERVICE],
            )
            await grpc_server.start()
            self.grpc_port = grpc_server.port
            tasks += [
                asyncio.create_task(hub.run_head_poll(), name="head-poll"),
                asyncio.create_task(hub.run_housekeeping(), name="housekeeping"),
            ]
            self.readiness.add("postgres", lambda: check_pool(pool))
            # No broker check: without RabbitMQ the gateway still replays from Postgres
            # and its head poll delivers new frames (slower); a broker blip must not
            # take every gateway out of the load balancer.
            # ready on cached keys while control is down (JwksCache.ready)
            self.readiness.add("jwks", jwks.ready)
            self.readiness.add("revocations", sync.check)
            log.info(
                "gateway started",
                instance=self.instance_id,
                fanout_queue=fanout_queue,
                grpc_port=self.grpc_port,
            )
            yield
        finally:
            await self.drain()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for consumer in (control, fanout):
                if consumer is not None:
                    await consumer.stop()
            if grpc_server is not None:
                await grpc_server.stop(1.0)
            await broker.close()
            await sync.close()
            await pool.close()


class GatewayServer:
    """A GatewayApp as tests run it: a 5 s shutdown budget, the bound ports, the hub."""

    def __init__(self, settings: Settings) -> None:
        self.gateway = GatewayApp(settings, shutdown_timeout_s=5.0)

    @property
    def http_port(self) -> int | None:
        """The bound HTTP port (after start)."""
        return self.gateway.http_port

    @property
    def grpc_port(self) -> int | None:
        """The bound gRPC port (after start)."""
        return self.gateway.grpc_port

    @property
    def hub(self) -> Hub:
        """The running gateway's hub (after start)."""
        assert self.gateway.hub is not None
        return self.gateway.hub

    async def start(self) -> None:
        """Set up the app (resources) and listen."""
        await self.gateway.start()

    async def drain(self) -> None:
        """Drain the sockets (as on SIGTERM)."""
        await self.gateway.drain()

    async def stop(self) -> None:
        """Drain, then release every resource."""
        await self.gateway.stop()
