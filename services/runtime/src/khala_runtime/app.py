"""Composition root of the runtime service.

`RuntimeApp.start()` wires everything in dependency order — Postgres pool,
broker, the control and projector clients, the run and worker use cases, the
gRPC server, the outbox relay task, then the HTTP app (routes, authenticator,
per-org append limit) — and registers each on an exit stack; `stop()` first
stops advertising readiness (HTTP /readyz and gRPC health), then unwinds the
stack in reverse: HTTP stops, the relay task is cancelled and awaited, gRPC
stops, then the broker, the clients and the pool close. Tests build the same
object with ports 0 through `start` and read `http_port` and `grpc_port`.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from typing import cast

import asyncpg
from aiohttp import web

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer, tls_of
from khala_common.http import Readiness, make_app
from khala_common.jwt_verify import JwksCache, TokenVerifier, http_jwks_fetcher
from khala_common.logs import get_logger
from khala_common.runner import StackedService
from khala_common.topology import Topology
from khala_runtime.adapters.control_client import ControlClient
from khala_runtime.adapters.fault_injection import CrashBeforeConfirm
from khala_runtime.adapters.projector_client import ProjectorClient
from khala_runtime.domain.rate_limit import OrgRateLimiter
from khala_runtime.handlers import cli, http_audit, http_runs, http_workers, openapi
from khala_runtime.handlers.context import (
    append_limit_key,
    audit_key,
    auth_key,
    service_key,
    worker_service_key,
)
from khala_runtime.handlers.errors import domain_error_middleware
from khala_runtime.handlers.grpc_runtime import CALLERS, SERVICE_NAME, RuntimeServicer
from khala_runtime.settings import Settings
from khala_runtime.storage import SCHEMA
from khala_runtime.usecases.audit import AuditLog
from khala_runtime.usecases.auth import ACCESS_AUDIENCE, Authenticator
from khala_runtime.usecases.outbox_relay import OutboxRelay
from khala_runtime.usecases.runs import RunService
from khala_runtime.usecases.workers import WorkerService
from openagents.runtime.v1 import runtime_service_pb2_grpc

log = get_logger("app")

grpc_key = web.AppKey("runtime_grpc", GrpcServer)
relay_key = web.AppKey("runtime_relay", OutboxRelay)
readiness_app_key = web.AppKey("runtime_readiness", Readiness)

# How long HTTP shutdown waits for requests in flight.
SHUTDOWN_TIMEOUT_S = 10.0


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class RuntimeApp(StackedService):
    """The running runtime service: HTTP API, gRPC RuntimeService, outbox relay."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readiness = Readiness()
        self.http_port = 0
        self.grpc_port = 0
        self._app: web.Application | None = None
        self._grpc: GrpcServer | None = None

    @property
    def app(self) -> web.Application:
        """The HTTP application (its keys reach the use cases, the relay, gRPC)."""
        if self._app is None:
            raise RuntimeError("runtime is not started")
        return self._app

    async def stop(self) -> None:
        """Stop advertising readiness, then close everything in reverse start order."""
        self.readiness.draining = True
        if self._grpc is not None:
            await self._grpc.set_serving(False)
        if await self.close_stack():
            log.info("runtime stopped")

    async def _start(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        pool = await create_pool(settings.database_url, SCHEMA, max_size=settings.db_pool_size)
        stack.push_async_callback(pool.close)
        projector = ProjectorClient(
            settings.projector_grpc_target,
            settings.service_token,
            timeout_s=settings.projector_timeout_s,
            tls=tls_of(settings),
        )
        stack.push_async_callback(projector.close)
        control = ControlClient(
            settings.control_grpc_target, settings.service_token, tls=tls_of(settings)
        )
        stack.push_async_callback(control.close)
        broker = Broker(settings.amqp_url, Topology(prefix=settings.amqp_prefix))
        stack.push_async_callback(broker.close)

        runs = RunService(
            pool, projections=projector, group_inflight=settings.group_commit_inflight
        )
        workers = WorkerService(
            pool,
            stale_after_ms=settings.heartbeat_stale_after_ms,
            projections=projector,
            group_inflight=settings.group_commit_inflight,
        )

        grpc_server = GrpcServer.serving(settings, settings.grpc_port, CALLERS)
        grpc_server.add(
            runtime_service_pb2_grpc.add_RuntimeServiceServicer_to_server,
            RuntimeServicer(runs, workers),
            [SERVICE_NAME],
        )
        grpc_server.follow(self.readiness)
        await grpc_server.start()
        stack.push_async_callback(grpc_server.stop)
        self._grpc = grpc_server
        self.grpc_port = grpc_server.port
        log.info("grpc listening", port=grpc_server.port)

        relay = _relay(settings, broker)
        stack.push_async_callback(_cancel, asyncio.create_task(relay.run(), name="outbox-relay"))

        self.readiness.add("postgres", lambda: check_pool(pool))
        # No broker check: while RabbitMQ is down runtime still accepts appends (they
        # wait in the outbox, KhalaOutboxBacklog) and serves reads, so it stays ready.
        app = self._http_app(runs, workers, Authenticator(_token_verifier(settings), control))
        app[grpc_key] = grpc_server
        app[relay_key] = relay
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.bind_host, settings.http_port, reuse_address=True)
        await site.start()
        self._app = app
        self.http_port = runner.addresses[0][1]
        log.info("runtime started", http_port=self.http_port, grpc_port=self.grpc_port)

    def _http_app(
        self, runs: RunService, workers: WorkerService, auth: Authenticator
    ) -> web.Application:
        settings = self.settings
        app = make_app(
            self.readiness,
            client_max_size=settings.max_body_bytes,
            admin_port=settings.admin_port,
            admin_host=settings.bind_host,
        )
        app.middlewares.append(domain_error_middleware)
        app[service_key] = runs
        app[worker_service_key] = workers
        app[auth_key] = auth
        app[audit_key] = AuditLog(runs.pool)
        app[append_limit_key] = OrgRateLimiter(
            settings.append_rate_per_org, settings.append_burst_per_org
        )
        app[readiness_app_key] = self.readiness
        openapi.add_routes(app)
        http_runs.add_routes(app)
        http_workers.add_routes(app)
        http_audit.add_routes(app)
        return app


def _token_verifier(settings: Settings) -> TokenVerifier:
    """Verifies access tokens against control's JWKS."""
    return TokenVerifier(
        JwksCache(http_jwks_fetcher(settings.jwks_url)),
        issuer=settings.token_issuer,
        audience=ACCESS_AUDIENCE,
        required=("exp", "iat", "sub", "sid"),
    )


def _relay(settings: Settings, broker: Broker) -> OutboxRelay:
    """The outbox relay, over a crashing broker proxy if a test asks for one."""
    relay_broker = broker
    if settings.test_crash_before_confirm:
        log.warning(
            "FAULT INJECTION enabled: SIGKILL before a publish confirm",
            publish=settings.test_crash_before_confirm,
        )
        relay_broker = cast(Broker, CrashBeforeConfirm(broker, settings.test_crash_before_confirm))
    return OutboxRelay(
        settings.database_url,
        relay_broker,
        poll_interval_s=settings.outbox_poll_interval_s,
        partitions=settings.projector_partitions,
        linger_s=settings.outbox_linger_ms / 1000,
    )


Started = RuntimeApp
"""A running runtime (tests and tools); kept as the name `start` returns."""


async def start(settings: Settings) -> RuntimeApp:
    """Build and start the runtime on the configured ports (0 = ephemeral)."""
    runtime = RuntimeApp(settings)
    await runtime.start()
    return runtime


async def verify_chains(settings: Settings, stream_id: str | None, as_json: bool) -> int:
    """`khala-runtime verify`: check one stream (or all) over a small pool; exit status."""
    pool: asyncpg.Pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        return await cli.verify_command(pool, stream_id, as_json)
    finally:
        await pool.close()
