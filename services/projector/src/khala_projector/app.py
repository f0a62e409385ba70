"""Composition root: Postgres pool, broker, runtime client, publisher, consumer,
gRPC admin server and the HTTP app with /healthz, /readyz and /metrics.

Start order: pool → broker (exchanges, partition queues + DLQ) → runtime client →
republish every frame above the publish cursor (before any consumption) →
gRPC server → consumer → partition ownership (which queues it consumes) →
background tasks (publish retry, metrics sampler, retention pass, drift
detector; the last two only when their period is > 0).
Shutdown runs in reverse; the aiohttp cleanup context owns every background
task and awaits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer
from khala_common.http import Readiness, make_app
from khala_common.logs import get_logger
from khala_common.topology import Topology
from khala_projector.domain.retention import RetentionPolicy
from khala_projector.drift import DriftDetector
from khala_projector.handlers.admin_grpc import ProjectorAdmin
from khala_projector.handlers.amqp_consumer import EventConsumer
from khala_projector.partitions import PartitionOwner
from khala_projector.projector import Projector
from khala_projector.publisher import FanoutPublisher
from khala_projector.retention import RetentionWorker
from khala_projector.runtime_reader import RuntimeReader
from khala_projector.sampler import MetricsSampler
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage.projection_store import ProjectionStore
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.storage.retention_store import RetentionStore
from khala_projector.storage.topic_log import TopicLog
from openagents.sync.v1 import projector_admin_pb2
from openagents.sync.v1.projector_admin_pb2_grpc import add_ProjectorAdminServicer_to_server

log = get_logger("projector.app")

FIRST_REBALANCE_S = 10.0


@dataclass
class Services:
    """What the running app holds; filled in during startup."""

    settings: Settings
    readiness: Readiness
    grpc_port: int = 0
    consumer: EventConsumer | None = None
    partitions: PartitionOwner | None = None
    publisher: FanoutPublisher | None = None
    retention: RetentionWorker | None = None
    drift: DriftDetector | None = None
    sampler: MetricsSampler | None = None


services_key = web.AppKey("khala_projector_services", Services)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The projector's aiohttp app; everything else starts in its cleanup context."""
    readiness = Readiness()
    app = make_app(readiness, admin_port=settings.admin_port, admin_host=settings.bind_host)
    app[services_key] = Services(settings, readiness)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await _start(app[services_key], stack, clock)
            yield
            app[services_key].readiness.draining = True

    app.cleanup_ctx.append(lifecycle)
    return app


async def _start(
    services: Services, stack: contextlib.AsyncExitStack, clock: Callable[[], float]
) -> None:
    settings, readiness = services.settings, services.readiness
    pool = await create_pool(settings.database_url, SCHEMA)
    stack.push_async_callback(pool.close)

    topology = Topology(prefix=settings.amqp_prefix)
    broker = Broker(settings.amqp_url, topology)
    await broker.connect(prefetch=settings.prefetch)
    stack.push_async_callback(broker.close)
    await broker.declare_exchanges()
    queues = [
        await broker.declare_projector_queue(settings.delivery_limit, partition)
        for partition in range(settings.projector_partitions)
    ]

    reader = RuntimeReader(
        settings.runtime_grpc_target, settings.service_token, settings.runtime_grpc_timeout_s
    )
    stack.push_async_callback(reader.close)

    publisher = FanoutPublisher(broker, TopicLog(pool), topology.fanout)
    republished = await publisher.catch_up()
    log.info("republished frames above the publish cursor", frames=republished)
    services.publisher = publisher
    # Runs after the consumer stopped (the stack unwinds in reverse).
    stack.push_async_callback(_quietly, publisher.flush_cursor)

    store = ProjectionStore(pool, crash_in_commit=settings.test_crash_in_commit)
    if settings.test_crash_in_commit:
        log.warning(
            "FAULT INJECTION enabled: SIGKILL inside a commit", commit=settings.test_crash_in_commit
        )
    projector = Projector(
        store, reader, publisher, clock, crash_after_commit=settings.test_crash_after_commit
    )
    if settings.test_crash_after_commit:
        log.warning(
            "FAULT INJECTION enabled: SIGKILL after commit",
            commit=settings.test_crash_after_commit,
        )
    grpc_server = GrpcServer(settings.bind_host, settings.grpc_port, settings.service_token)
    grpc_server.follow(readiness)
    names = [projector_admin_pb2.DESCRIPTOR.services_by_name["ProjectorAdmin"].full_name]
    grpc_server.add(add_ProjectorAdminServicer_to_server, ProjectorAdmin(projector), names)
    await grpc_server.start()
    stack.push_async_callback(grpc_server.stop)
    services.grpc_port = grpc_server.port

    consumer = EventConsumer(
        projector,
        batch_max=settings.batch_max,
        delivery_limit=settings.delivery_limit,
        retry_delay_ms=settings.retry_delay_ms,
    )
    await consumer.start()
    stack.push_async_callback(consumer.stop)
    services.consumer = consumer

    async def take(partition: int) -> None:
        await consumer.add_queue(queues[partition])

    async def hand_over(partition: int) -> None:
        await consumer.remove_queue(queues[partition].name)

    services.partitions = PartitionOwner(
        settings.database_url,
        settings.projector_partitions,
        on_acquire=take,
        on_release=hand_over,
        interval_s=settings.rebalance_interval_s,
    )
    _own(stack, services.partitions.run(), "partitions")
    # Consume from the start like a single replica would: wait for the first
    # rebalance (a replica that finds every partition taken starts with none).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(services.partitions.settled_once.wait(), FIRST_REBALANCE_S)

    _own(stack, publisher.retry_forever(settings.republish_interval_s), "republish")
    rebuilds = RebuildStore(pool)
    services.sampler = MetricsSampler(broker, rebuilds, settings.projector_partitions)
    _own(stack, services.sampler.run_forever(settings.metrics_interval_s), "sampler")
    services.retention = RetentionWorker(
        RetentionStore(pool), rebuilds, _retention_policy(settings), clock
    )
    if settings.retention_interval_s > 0:
        _own(stack, services.retention.run_forever(settings.retention_interval_s), "retention")
    services.drift = DriftDetector(
        store, reader, projector, sample=settings.drift_sample, repair=settings.drift_repair
    )
    if settings.drift_interval_s > 0:
        _own(stack, services.drift.run_forever(settings.drift_interval_s), "drift")

    readiness.add("postgres", lambda: check_pool(pool))
    readiness.add("broker", lambda: _require(broker.is_connected, "broker is not connected"))
    readiness.add("consumer", lambda: _require(consumer.running, "consumer is not running"))
    log.info(
        "projector started",
        grpc_port=services.grpc_port,
        partitions=settings.projector_partitions,
    )


def _retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        event_max_frames=settings.event_retain_frames,
        event_max_age_ms=int(settings.event_retain_age_s * 1000),
        doc_tail_frames=settings.doc_tail_frames,
    )


def _own(stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> None:
    """Run `work` as a task that the exit stack cancels and awaits."""
    task = asyncio.create_task(work, name=f"khala-projector-{name}")
    stack.push_async_callback(_cancel, task)


async def _quietly(step: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A best-effort shutdown step (a failure is logged, not raised)."""
    try:
        await step()
    except Exception as exc:
        log.warning("shutdown step failed", step=getattr(step, "__name__", "?"), error=repr(exc))


async def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass(frozen=True)
class Running:
    """A started projector and its bound ports."""

    app: web.Application
    http_port: int
    grpc_port: int

    @property
    def services(self) -> Services:
        return self.app[services_key]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Running]:
    """Start the app on the configured ports (0 = ephemeral) until the block exits."""
    app = create_app(settings, clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.bind_host, settings.http_port)
        await site.start()
        http_port = int(runner.addresses[0][1])
        yield Running(app, http_port, app[services_key].grpc_port)
    finally:
        await runner.cleanup()
