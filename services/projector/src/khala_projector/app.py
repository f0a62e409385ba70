"""Composition root of the projector.

`ProjectorApp.start()` wires, in this order: Postgres pool → broker (exchanges,
partition queues + DLQ) → runtime client → republish every frame above the
publish cursor (before any consumption) → gRPC admin server → consumer →
partition ownership (which queues it consumes) → background tasks (publish
retry, metrics sampler, retention pass, drift detector; the last two only when
their period is > 0) → the HTTP app with /healthz, /readyz and /metrics.
Each step is registered on an exit stack; `stop()` first marks the app
draining, then unwinds it in reverse, so every background task is cancelled
and awaited by its owner. Tests build the same object (through `running`) with
ports 0 and read `http_port` and `grpc_port` after `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractQueue
from aiohttp import web

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer, tls_of
from khala_common.http import Readiness, make_app
from khala_common.logs import get_logger
from khala_common.runner import StackedService
from khala_common.topology import Topology
from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.domain.retention import RetentionPolicy
from khala_projector.handlers.admin_grpc import CALLERS, ProjectorAdmin
from khala_projector.handlers.amqp_consumer import EventConsumer
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage.projection_store import ProjectionStore
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.storage.retention_store import RetentionStore
from khala_projector.storage.topic_log import TopicLog
from khala_projector.usecases.drift import DriftDetector
from khala_projector.usecases.partitions import PartitionOwner
from khala_projector.usecases.projector import Projector
from khala_projector.usecases.publisher import FanoutPublisher
from khala_projector.usecases.retention import RetentionWorker
from khala_projector.usecases.sampler import MetricsSampler
from openagents.sync.v1 import projector_admin_pb2
from openagents.sync.v1.projector_admin_pb2_grpc import add_ProjectorAdminServicer_to_server

log = get_logger("projector.app")

FIRST_REBALANCE_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0


class ProjectorApp(StackedService):
    """The running projector: consumer, fanout publisher, ProjectorAdmin gRPC, HTTP."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.readiness = Readiness()
        self.http_port = 0
        self.grpc_port = 0
        self.consumer: EventConsumer | None = None
        self.partitions: PartitionOwner | None = None
        self.publisher: FanoutPublisher | None = None
        self.retention: RetentionWorker | None = None
        self.drift: DriftDetector | None = None
        self.sampler: MetricsSampler | None = None
        self._clock = clock

    async def stop(self) -> None:
        """Stop advertising readiness, then close everything in reverse start order."""
        self.readiness.draining = True
        if await self.close_stack():
            log.info("projector stopped")

    async def _start(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        pool = await create_pool(settings.database_url, SCHEMA)
        stack.push_async_callback(pool.close)
        broker, queues = await _open_broker(settings, stack)
        reader = RuntimeReader(
            settings.runtime_grpc_target,
            settings.service_token,
            settings.runtime_grpc_timeout_s,
            tls=tls_of(settings),
        )
        stack.push_async_callback(reader.close)

        publisher = FanoutPublisher(broker, TopicLog(pool), broker.topology.fanout)
        republished = await publisher.catch_up()
        log.info("republished frames above the publish cursor", frames=republished)
        self.publisher = publisher
        # Runs after the consumer stopped (the stack unwinds in reverse).
        stack.push_async_callback(_quietly, publisher.flush_cursor)

        store = ProjectionStore(pool, crash_in_commit=settings.test_crash_in_commit)
        projector = Projector(
            store,
            reader,
            publisher,
            self._clock,
            crash_after_commit=settings.test_crash_after_commit,
        )
        _warn_fault_injection(settings)
        await self._start_grpc(stack, projector)
        consumer = await self._start_consumer(stack, projector, queues)

        _own(stack, publisher.retry_forever(settings.republish_interval_s), "republish")
        rebuilds = RebuildStore(pool)
        self.sampler = MetricsSampler(broker, rebuilds, settings.projector_partitions)
        _own(stack, self.sampler.run_forever(settings.metrics_interval_s), "sampler")
        self.retention = RetentionWorker(
            RetentionStore(pool), rebuilds, _retention_policy(settings), self._clock
        )
        if settings.retention_interval_s > 0:
            _own(stack, self.retention.run_forever(settings.retention_interval_s), "retention")
        self.drift = DriftDetector(
            store, reader, projector, sample=settings.drift_sample, repair=settings.drift_repair
        )
        if settings.drift_interval_s > 0:
            _own(stack, self.drift.run_forever(settings.drift_interval_s), "drift")

        self.readiness.add("postgres", lambda: check_pool(pool))
        self.readiness.add(
            "broker", lambda: _require(broker.is_connected, "broker is not connected")
        )
        self.readiness.add(
            "consumer", lambda: _require(consumer.running, "consumer is not running")
        )
        await self._start_http(stack)
        log.info(
            "projector started",
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            partitions=settings.projector_partitions,
        )

    async def _start_grpc(self, stack: AsyncExitStack, projector: Projector) -> None:
        settings = self.settings
        grpc_server = GrpcServer.serving(settings, settings.grpc_port, CALLERS)
        grpc_server.follow(self.readiness)
        names = [projector_admin_pb2.DESCRIPTOR.services_by_name["ProjectorAdmin"].full_name]
        grpc_server.add(add_ProjectorAdminServicer_to_server, ProjectorAdmin(projector), names)
        await grpc_server.start()
        stack.push_async_callback(grpc_server.stop)
        self.grpc_port = grpc_server.port

    async def _start_consumer(
        self, stack: AsyncExitStack, projector: Projector, queues: list[AbstractQueue]
    ) -> EventConsumer:
        """Start the consumer, then the partition ownership that hands it its queues."""
        settings = self.settings
        consumer = EventConsumer(
            projector,
            batch_max=settings.batch_max,
            delivery_limit=settings.delivery_limit,
            retry_delay_ms=settings.retry_delay_ms,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        self.consumer = consumer

        async def take(partition: int) -> None:
            await consumer.add_queue(queues[partition])

        async def hand_over(partition: int) -> None:
            await consumer.remove_queue(queues[partition].name)

        self.partitions = PartitionOwner(
            settings.database_url,
            settings.projector_partitions,
            on_acquire=take,
            on_release=hand_over,
            interval_s=settings.rebalance_interval_s,
        )
        _own(stack, self.partitions.run(), "partitions")
        # Consume from the start like a single replica would: wait for the first
        # rebalance (a replica that finds every partition taken starts with none).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.partitions.settled_once.wait(), FIRST_REBALANCE_S)
        return consumer

    async def _start_http(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        app = make_app(
            self.readiness, admin_port=settings.admin_port, admin_host=settings.bind_host
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.bind_host, settings.http_port, reuse_address=True)
        await site.start()
        self.http_port = int(runner.addresses[0][1])


async def _open_broker(
    settings: Settings, stack: AsyncExitStack
) -> tuple[Broker, list[AbstractQueue]]:
    """The connected broker with its exchanges, and the partition queues (+ DLQ)."""
    broker = Broker(settings.amqp_url, Topology(prefix=settings.amqp_prefix))
    await broker.connect(prefetch=settings.prefetch)
    stack.push_async_callback(broker.close)
    await broker.declare_exchanges()
    queues = [
        await broker.declare_projector_queue(settings.delivery_limit, partition)
        for partition in range(settings.projector_partitions)
    ]
    return broker, queues


def _warn_fault_injection(settings: Settings) -> None:
    if settings.test_crash_in_commit:
        log.warning(
            "FAULT INJECTION enabled: SIGKILL inside a commit", commit=settings.test_crash_in_commit
        )
    if settings.test_crash_after_commit:
        log.warning(
            "FAULT INJECTION enabled: SIGKILL after commit",
            commit=settings.test_crash_after_commit,
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

    app: ProjectorApp
    http_port: int
    grpc_port: int

    @property
    def services(self) -> ProjectorApp:
        """What the running app holds (consumer, publisher, sampler, readiness, ...)."""
        return self.app


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Running]:
    """Start the app on the configured ports (0 = ephemeral) until the block exits."""
    async with ProjectorApp(settings, clock=clock) as app:
        yield Running(app, app.http_port, app.grpc_port)
