"""Composition root of the runtime service.

`build_app` wires the Postgres pool, run and worker services, authenticator,
projector client, gRPC server, broker and outbox relay into one aiohttp
application that owns them: the gRPC server and the relay task are started and
stopped by `cleanup_ctx`, and the pool, broker and gRPC channels are closed
after them. Tests build the same
app with ports 0 through `start` and read the bound ports from it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer
from khala_common.http import Readiness, make_app
from khala_common.jwt_verify import JwksCache, TokenVerifier, http_jwks_fetcher
from khala_common.logs import get_logger
from khala_common.topology import Topology
from khala_runtime.adapters.control_client import ControlClient
from khala_runtime.adapters.fault_injection import CrashBeforeConfirm
from khala_runtime.adapters.projector_client import ProjectorClient
from khala_runtime.domain.rate_limit import OrgRateLimiter
from khala_runtime.handlers import http_runs, http_workers, openapi
from khala_runtime.handlers.context import (
    append_limit_key,
    auth_key,
    service_key,
    worker_service_key,
)
from khala_runtime.handlers.errors import domain_error_middleware
from khala_runtime.handlers.grpc_runtime import SERVICE_NAME, RuntimeServicer
from khala_runtime.settings import Settings
from khala_runtime.storage import SCHEMA
from khala_runtime.usecases.auth import ACCESS_AUDIENCE, Authenticator
from khala_runtime.usecases.outbox_relay import OutboxRelay
from khala_runtime.usecases.runs import RunService
from khala_runtime.usecases.workers import WorkerService
from openagents.runtime.v1 import runtime_service_pb2_grpc

log = get_logger("app")

grpc_key = web.AppKey("runtime_grpc", GrpcServer)
relay_key = web.AppKey("runtime_relay", OutboxRelay)
readiness_app_key = web.AppKey("runtime_readiness", Readiness)


async def build_app(settings: Settings) -> web.Application:
    """The runtime application; its gRPC port is bound already (`grpc_key`)."""
    pool = await create_pool(settings.database_url, SCHEMA, max_size=settings.db_pool_size)
    broker = Broker(settings.amqp_url, Topology(prefix=settings.amqp_prefix))
    control = ControlClient(settings.control_grpc_target, settings.service_token)
    verifier = TokenVerifier(
        JwksCache(http_jwks_fetcher(settings.jwks_url)),
        issuer=settings.token_issuer,
        audience=ACCESS_AUDIENCE,
        required=("exp", "iat", "sub", "sid"),
    )
    projector = ProjectorClient(
        settings.projector_grpc_target,
        settings.service_token,
        timeout_s=settings.projector_timeout_s,
    )
    service = RunService(
        pool, projections=projector, group_inflight=settings.group_commit_inflight
    )
    workers = WorkerService(
        pool,
        stale_after_ms=settings.heartbeat_stale_after_ms,
        projections=projector,
        group_inflight=settings.group_commit_inflight,
    )
    grpc_server = GrpcServer(settings.bind_host, settings.grpc_port, settings.service_token)
    grpc_server.add(
        runtime_service_pb2_grpc.add_RuntimeServiceServicer_to_server,
        RuntimeServicer(service, workers),
        [SERVICE_NAME],
    )
    relay_broker = broker
    if settings.test_crash_before_confirm:
        log.warning("FAULT INJECTION enabled: SIGKILL before a publish confirm",
                    publish=settings.test_crash_before_confirm)
        relay_broker = cast(Broker, CrashBeforeConfirm(broker, settings.test_crash_before_confirm))
    relay = OutboxRelay(
        settings.database_url,
        relay_broker,
        poll_interval_s=settings.outbox_poll_interval_s,
        partitions=settings.projector_partitions,
        linger_s=settings.outbox_linger_ms / 1000,
    )

    readiness = Readiness()
    grpc_server.follow(readiness)
    readiness.add("postgres", lambda: check_pool(pool))
    # No broker check: while RabbitMQ is down runtime still accepts appends (they
    # wait in the outbox, KhalaOutboxBacklog) and serves reads, so it stays ready.

    app = make_app(
        readiness,
        client_max_size=settings.max_body_bytes,
        admin_port=settings.admin_port,
        admin_host=settings.bind_host,
    )
    app.middlewares.append(domain_error_middleware)
    app[service_key] = service
    app[worker_service_key] = workers
    app[auth_key] = Authenticator(verifier, control)
    app[append_limit_key] = OrgRateLimiter(
        settings.append_rate_per_org, settings.append_burst_per_org
    )
    app[grpc_key] = grpc_server
    app[relay_key] = relay
    app[readiness_app_key] = readiness
    openapi.add_routes(app)
    http_runs.add_routes(app)
    http_workers.add_routes(app)

    async def serve_grpc(_: web.Application) -> AsyncIterator[None]:
        await grpc_server.start()
        log.info("grpc listening", port=grpc_server.port)
        yield
        await grpc_server.stop()

    async def run_relay(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(relay.run(), name="outbox-relay")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_resources(_: web.Application) -> None:
        await broker.close()
        await control.close()
        await projector.close()
        await pool.close()

    app.cleanup_ctx.append(serve_grpc)
    app.cleanup_ctx.append(run_relay)
    app.on_cleanup.append(close_resources)
    return app


async def drain(app: web.Application) -> None:
    """Stop advertising readiness before shutdown (SIGTERM)."""
    app[readiness_app_key].draining = True
    await app[grpc_key].set_serving(False)


@dataclass
class Started:
    """A running runtime (tests and tools): the app, its runner and bound ports."""

    app: web.Application
    runner: web.AppRunner
    http_port: int
    grpc_port: int

    async def stop(self) -> None:
        """Shut down the way SIGTERM does."""
        await drain(self.app)
        await self.runner.cleanup()


async def start(settings: Settings) -> Started:
    """Build and start the app on the configured ports (0 = ephemeral)."""
    app = await build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.bind_host, settings.http_port)
    await site.start()
    http_port = runner.addresses[0][1]
    return Started(app, runner, http_port, app[grpc_key].port)
