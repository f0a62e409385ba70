"""Helpers shared by the projector tests (imported via conftest's sys.path entry)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from khala_common.broker import Broker
from khala_common.grpc_server import GrpcServer
from openagents.runtime.v1 import events_pb2
from openagents.runtime.v1.events_pb2 import RuntimeEvent
from openagents.runtime.v1.runtime_service_pb2 import ReadStreamRequest, ReadStreamResponse
from openagents.runtime.v1.runtime_service_pb2_grpc import (
    RuntimeServiceServicer,
    add_RuntimeServiceServicer_to_server,
)

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
