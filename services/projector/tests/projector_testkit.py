"""Helpers shared by the projector tests (imported via conftest's sys.path entry)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aio_pika
import asyncpg
import grpc
from grpc import aio

from khala_common.broker import Broker
from khala_common.grpc_server import GrpcServer
from khala_common.topology import fanout_key
from openagents.runtime.v1 import events_pb2
from openagents.runtime.v1.events_pb2 import RuntimeEvent
from openagents.runtime.v1.runtime_service_pb2 import ReadStreamRequest, ReadStreamResponse
from openagents.runtime.v1.runtime_service_pb2_grpc import (
    RuntimeServiceServicer,
    add_RuntimeServiceServicer_to_server,
)
from openagents.sync.v1.frames_pb2 import FanoutBatch, KhalaFrame

SERVICE_TOKEN = "projector-test-service-token"
BASE_MS = 1_700_000_000_000


def make_event(
    org_id: str,
    stream_id: str,
    seq: int,
    type_: str,
    payload: dict[str, Any] | None = None,
    *,
    occurred_at_ms: int | None = None,
) -> RuntimeEvent:
    """A RuntimeEvent as runtime would publish it."""
    prefix, _, subject = stream_id.partition(":")
    kind = events_pb2.STREAM_KIND_RUN if prefix == "run" else events_pb2.STREAM_KIND_WORKER
    body = json.dumps(payload or {}, sort_keys=True, separators=(",", ":")).encode()
    return RuntimeEvent(
        event_id=f"ev-{subject}-{seq}",
        stream_id=stream_id,
        org_id=org_id,
        stream_kind=kind,
        subject_id=subject,
        stream_seq=seq,
        type=type_,
        payload_json=body,
        idempotency_key=f"idem-{subject}-{seq}",
        occurred_at_ms=occurred_at_ms if occurred_at_ms is not None else BASE_MS + seq * 1000,
        chain_hash=f"{seq:064x}",
    )


def run_events(org_id: str, run_id: str, types: Iterable[str]) -> list[RuntimeEvent]:
    """A run's events with payloads typical of each type, seq from 1."""
    payloads: dict[str, dict[str, Any]] = {
        "run.created": {"title": f"Run {run_id}"},
        "run.output": {"text": "hello"},
        "run.failed": {"reason": "boom"},
        "run.canceled": {"reason": "user"},
    }
    return [
        make_event(org_id, f"run:{run_id}", seq, type_, payloads.get(type_))
        for seq, type_ in enumerate(types, start=1)
    ]


class RuntimeDouble(RuntimeServiceServicer):
    """A test double of runtime's RuntimeService serving the events it holds."""

    def __init__(self) -> None:
        self.events: dict[str, list[RuntimeEvent]] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.failing: set[str] = set()

    def hold(self, events: Iterable[RuntimeEvent]) -> None:
        for event in events:
            self.events.setdefault(event.stream_id, []).append(event)

    async def ReadStream(
        self, request: ReadStreamRequest, context: aio.ServicerContext
    ) -> AsyncIterator[ReadStreamResponse]:
        self.calls.append((request.stream_id, request.after_seq, request.up_to_seq))
        if request.stream_id in self.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "runtime double refuses")
        for event in sorted(self.events.get(request.stream_id, []), key=lambda e: e.stream_seq):
            if event.stream_seq > request.after_seq and (
                request.up_to_seq == 0 or event.stream_seq <= request.up_to_seq
            ):
                yield ReadStreamResponse(event=event)


async def start_runtime_double(double: RuntimeDouble) -> GrpcServer:
    """Serve `double` on an ephemeral port behind the service credential."""
    server = GrpcServer("127.0.0.1", 0, SERVICE_TOKEN)
    server.add(
        add_RuntimeServiceServicer_to_server, double, ["openagents.runtime.v1.RuntimeService"]
    )
    await server.start()
    return server


async def publish_events(broker: Broker, events: Iterable[RuntimeEvent]) -> None:
    """Publish events to the runtime-events exchange the way runtime's relay does."""
    for event in events:
        kind = "run" if event.stream_id.startswith("run:") else "worker"
        await broker.publish(
            broker.topology.runtime_events,
            f"{event.org_id}.{kind}",
            event,
            message_id=event.event_id,
        )


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` until it is true or fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def metric_value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of a metric sample in the default registry (0 if absent)."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels or {})
    return value or 0.0


class FanoutTap:
    """An exclusive queue bound to khala.fanout for some topics, like a gateway's."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection):
        self.connection = connection
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    @classmethod
    async def open(cls, broker, topics: list[str]) -> FanoutTap:
        connection = await aio_pika.connect(broker.url)
        channel = await connection.channel()
        exchange = await channel.get_exchange(broker.topology.fanout)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in sorted({fanout_key(topic) for topic in topics}):
            await queue.bind(exchange, routing_key=key)
        tap = cls(connection)

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            tap.messages.append(message)
            await message.ack()

        await queue.consume(collect)
        return tap

    def raw_frames(self, topic: str | None = None) -> list[bytes]:
        """The stored bytes of every frame (of `topic`) in arrival order, out of
        the per-org FanoutBatch messages."""
        raw = [r for m in self.messages for r in FanoutBatch.FromString(m.body).frames]
        if topic is None:
            return raw
        return [r for r in raw if KhalaFrame.FromString(r).topic == topic]

    def frames(self, topic: str) -> list[KhalaFrame]:
        """The frames of `topic` in arrival order."""
        return [KhalaFrame.FromString(raw) for raw in self.raw_frames(topic)]

    async def wait(self, topic: str, count: int) -> None:
        async def enough() -> bool:
            return len(self.frames(topic)) >= count

        await wait_for(enough, what=f"{count} fanout frames on {topic}")

    async def close(self) -> None:
        await self.connection.close()


# -- the topic log as the gateway reads it (current epoch only) -----------------


async def topic_head(pool: asyncpg.Pool, topic: str) -> tuple[str, int, int]:
    """(epoch, head_seq, oldest_seq) of a topic; ("1", 0, 0) without a row."""
    row = await pool.fetchrow(
        "SELECT epoch, head_seq, oldest_seq FROM topics WHERE topic = $1", topic
    )
    return ("1", 0, 0) if row is None else (row["epoch"], row["head_seq"], row["oldest_seq"])


async def replay(pool: asyncpg.Pool, topic: str, after_seq: int) -> list[KhalaFrame]:
    """The frames a gateway replays after `after_seq`, up to the head, in seq order."""
    epoch, head, _ = await topic_head(pool, topic)
    rows = await pool.fetch(
        "SELECT frame_bytes FROM frames WHERE topic = $1 AND epoch = $2 AND seq > $3"
        " AND seq <= $4 ORDER BY seq",
        topic,
        epoch,
        after_seq,
        head,
    )
    return [KhalaFrame.FromString(row["frame_bytes"]) for row in rows]


async def snapshot(pool: asyncpg.Pool, topic: str) -> dict[str, KhalaFrame]:
    """A doc topic's snapshot as the gateway builds it: latest frame per key <= head."""
    epoch, head, _ = await topic_head(pool, topic)
    rows = await pool.fetch(
        "SELECT DISTINCT ON (key) key, frame_bytes FROM frames"
        " WHERE topic = $1 AND epoch = $2 AND seq <= $3 ORDER BY key, seq DESC",
        topic,
        epoch,
        head,
    )
    return {row["key"]: KhalaFrame.FromString(row["frame_bytes"]) for row in rows}


async def checkpoint_seq(pool: asyncpg.Pool, stream_id: str) -> int:
    """A stream's checkpoint (0 if none)."""
    value = await pool.fetchval("SELECT last_seq FROM checkpoints WHERE stream_id = $1", stream_id)
    return int(value or 0)


async def wait_checkpoints(
    pool: asyncpg.Pool, targets: dict[str, int], *, timeout_s: float = 30.0
) -> None:
    """Wait until every stream's checkpoint reached its target seq."""

    async def reached() -> bool:
        rows = await pool.fetch(
            "SELECT stream_id, last_seq FROM checkpoints WHERE stream_id = ANY($1::text[])",
            list(targets),
        )
        got = {row["stream_id"]: row["last_seq"] for row in rows}
        return all(got.get(sid, 0) >= seq for sid, seq in targets.items())

    await wait_for(reached, timeout_s=timeout_s, what=f"checkpoints of {len(targets)} streams")


def worker_events(org_id: str, worker_id: str, types: Iterable[str]) -> list[RuntimeEvent]:
    """A worker's events with payloads typical of each type, seq from 1."""
    payloads: dict[str, dict[str, Any]] = {"worker.error": {"error": "oops"}}
    return [
        make_event(org_id, f"worker:{worker_id}", seq, type_, payloads.get(type_))
        for seq, type_ in enumerate(types, start=1)
    ]


async def publish_many(broker: Broker, events: list[RuntimeEvent], window: int = 200) -> None:
    """Publish events in order, with up to `window` confirms outstanding at once."""
    for start in range(0, len(events), window):
        await asyncio.gather(*(publish_events(broker, [e]) for e in events[start : start + window]))


def projector_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a `python -m khala_projector` process with these settings."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("KHALA_")}
    env.update(
        {
            "KHALA_DATABASE_URL": settings.database_url,
            "KHALA_AMQP_URL": settings.amqp_url,
            "KHALA_AMQP_PREFIX": settings.amqp_prefix,
            "KHALA_SERVICE_TOKEN": settings.service_token,
            "KHALA_LOG_LEVEL": "info",
            "KHALA_BIND_HOST": "127.0.0.1",
            "KHALA_PROJECTOR_HTTP_PORT": "0",
            "KHALA_PROJECTOR_GRPC_PORT": "0",
            "KHALA_RUNTIME_GRPC_TARGET": settings.runtime_grpc_target,
            "KHALA_PROJECTOR_DELIVERY_LIMIT": str(settings.delivery_limit),
            "KHALA_PROJECTOR_RETRY_DELAY_MS": str(settings.retry_delay_ms),
            "KHALA_PROJECTOR_REPUBLISH_INTERVAL_S": str(settings.republish_interval_s),
            "KHALA_PROJECTOR_RETENTION_INTERVAL_S": "0",
            "KHALA_PROJECTOR_DRIFT_INTERVAL_S": "0",
        }
    )
    env.update(extra)
    return env


async def run_cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    """Run `python -m khala_projector ARGS` to completion: (exit code, stdout, stderr)."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "khala_projector",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
