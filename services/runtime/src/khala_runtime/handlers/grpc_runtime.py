"""gRPC `openagents.runtime.v1.RuntimeService`: the internal API of runtime.

Calls are trusted by the service credential (checked by khala_common's
interceptor before any method runs). AppendEvents takes the same domain path
as the HTTP append; ReadStream streams a stream's events in seq order.
Unary methods honour the caller's deadline: work still running when it passes
is cancelled (an append's transaction rolls back) and the call ends
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import NoReturn, TypeVar

import grpc
from grpc import aio

from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.heartbeat import heartbeat_view
from khala_runtime.domain.ids import is_valid_segment
from khala_runtime.domain.model import RunHead, WorkerHead
from khala_runtime.domain.requests import check_batch, check_event, payload_from_bytes
from khala_runtime.handlers.errors import GRPC_STATUS
from khala_runtime.usecases.runs import RunService
from khala_runtime.usecases.verify import ChainReport, verify_stream
from khala_runtime.usecases.workers import WorkerService
from openagents.runtime.v1 import events_pb2, runtime_service_pb2_grpc
from openagents.runtime.v1 import runtime_service_pb2 as pb

SERVICE_NAME = "openagents.runtime.v1.RuntimeService"
# Which services may call which method (docs/security.md "Service identity"); a
# method not listed is open to every known caller. Reads of the log and chain
# checks are the projector's (gap fill, drift, rebuild); writes come only from
# an operator's tooling credential, never from another service.
CALLERS = {
    f"/{SERVICE_NAME}/ReadStream": frozenset({"projector", "operator"}),
    f"/{SERVICE_NAME}/VerifyStream": frozenset({"projector", "operator"}),
    f"/{SERVICE_NAME}/AppendEvents": frozenset({"operator"}),
}
ERROR_CODE_KEY = "khala-error-code"
LIST_WORKERS_MAX = 1000
LIST_STREAMS_DEFAULT = 500
LIST_STREAMS_MAX = 1000
_KINDS = {
    events_pb2.STREAM_KIND_UNSPECIFIED: ("run", "worker"),
    events_pb2.STREAM_KIND_RUN: ("run",),
    events_pb2.STREAM_KIND_WORKER: ("worker",),
}
T = TypeVar("T")


async def _abort(context: aio.ServicerContext, exc: DomainError) -> NoReturn:
    status = GRPC_STATUS.get(exc.code)
    assert status is not None, exc.code
    await context.abort(status, exc.message, trailing_metadata=((ERROR_CODE_KEY, exc.code),))
    raise AssertionError("unreachable")  # pragma: no cover


async def _within_deadline(context: aio.ServicerContext, work: Awaitable[T]) -> T:
    """Await `work`, cancelled when the caller's deadline passes (DEADLINE_EXCEEDED)."""
    remaining = context.time_remaining()
    if remaining is None:
        return await work
    try:
        if remaining <= 0:
            raise TimeoutError
        async with asyncio.timeout(remaining):
            return await work
    except TimeoutError:
        if asyncio.iscoroutine(work):
            work.close()
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline exceeded",
            trailing_metadata=((ERROR_CODE_KEY, "deadline_exceeded"),),
        )
        raise AssertionError("unreachable") from None  # pragma: no cover


def worker_proto(head: WorkerHead, stale_after_ms: int) -> pb.Worker:
    """The proto form of a worker head, with heartbeat freshness as of now."""
    heartbeat = heartbeat_view(head.last_heartbeat_at_ms, int(time.time() * 1000), stale_after_ms)
    return pb.Worker(
        worker_id=head.worker_id,
        org_id=head.org_id,
        status=f"WORKER_STATUS_{head.status.value.upper()}",
        last_seq=head.last_seq,
        last_heartbeat_at_ms=head.last_heartbeat_at_ms or 0,
        created_at_ms=head.created_at_ms,
        updated_at_ms=head.updated_at_ms,
        heartbeat_state=f"HEARTBEAT_STATE_{heartbeat.state.value.upper()}",
        heartbeat_age_ms=heartbeat.age_ms or 0,
        heartbeat_stale_after_ms=heartbeat.stale_after_ms,
    )


def verify_proto(report: ChainReport) -> pb.VerifyStreamResponse:
    """The proto form of a chain verification report."""
    broken = report.broken
    return pb.VerifyStreamResponse(
        stream_id=report.stream_id,
        ok=report.ok,
        head_seq=report.head_seq,
        chain_hash=report.chain_hash,
        events_checked=report.events_checked,
        broken_seq=broken.stream_seq if broken else 0,
        reason=broken.reason if broken else "",
        expected=broken.expected if broken else "",
        actual=broken.actual if broken else "",
    )


def run_proto(head: RunHead) -> pb.Run:
    """The proto form of a run head."""
    return pb.Run(
        run_id=head.run_id,
        org_id=head.org_id,
        title=head.title,
        status=f"RUN_STATUS_{head.status.value.upper()}",
        last_seq=head.last_seq,
        created_at_ms=head.created_at_ms,
        updated_at_ms=head.updated_at_ms,
    )


class RuntimeServicer(runtime_service_pb2_grpc.RuntimeServiceServicer):
    """RuntimeService over RunService and WorkerService."""

    def __init__(self, service: RunService, workers: WorkerService) -> None:
        self._service = service
        self._workers = workers

    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.ReadStreamResponse]:
        """Events with after_seq < stream_seq <= up_to_seq (0: head), in order."""
        try:
            if request.up_to_seq and request.up_to_seq < request.after_seq:
                raise ValidationError("up_to_seq", "must be 0 or >= after_seq")
            async for event in self._service.stream(
                request.stream_id, after_seq=request.after_seq, up_to_seq=request.up_to_seq
            ):
                yield pb.ReadStreamResponse(event=event)
        except DomainError as exc:
            await _abort(context, exc)

    async def AppendEvents(
        self, request: pb.AppendEventsRequest, context: aio.ServicerContext
    ) -> pb.AppendEventsResponse:
        """Append events to a run (same rules and receipt as the HTTP API)."""
        try:
            if not is_valid_segment(request.run_id):
                raise ValidationError("run_id", "must match [A-Za-z0-9_-]{1,64}")
            inputs = [
                check_event(
                    event.type,
                    payload_from_bytes(event.payload_json, f"events[{i}].payload_json"),
                    event.idempotency_key,
                    f"events[{i}]",
                )
                for i, event in enumerate(request.events)
            ]
            check_batch(inputs)
            expected = request.expected_seq if request.HasField("expected_seq") else None
            receipt, _ = await _within_deadline(
                context, self._service.append(request.run_id, inputs, expected_seq=expected)
            )
        except DomainError as exc:
            await _abort(context, exc)
        return pb.AppendEventsResponse(receipt=receipt)

    async def GetRun(
        self, request: pb.GetRunRequest, context: aio.ServicerContext
    ) -> pb.GetRunResponse:
        """A run's snapshot."""
        try:
            head = await _within_deadline(context, self._service.get_run(request.run_id))
        except DomainError as exc:
            await _abort(context, exc)
        return pb.GetRunResponse(run=run_proto(head))

    async def GetWorker(
        self, request: pb.GetWorkerRequest, context: aio.ServicerContext
    ) -> pb.GetWorkerResponse:
        """A worker's snapshot."""
        try:
            if not is_valid_segment(request.worker_id):
                raise ValidationError("worker_id", "must match [A-Za-z0-9_-]{1,64}")
            head = await _within_deadline(context, self._workers.get_worker(request.worker_id))
        except DomainError as exc:
            await _abort(context, exc)
        return pb.GetWorkerResponse(worker=worker_proto(head, self._workers.stale_after_ms))

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: aio.ServicerContext
    ) -> pb.ListWorkersResponse:
        """An org's workers, newest first (at most LIST_WORKERS_MAX)."""
        try:
            if not is_valid_segment(request.org_id):
                raise ValidationError("org_id", "must match [A-Za-z0-9_-]{1,64}")
            heads = await _within_deadline(
                context,
                self._workers.list_workers(request.org_id, limit=LIST_WORKERS_MAX, before=None),
            )
        except DomainError as exc:
            await _abort(context, exc)
        return pb.ListWorkersResponse(
            workers=[worker_proto(head, self._workers.stale_after_ms) for head in heads]
        )

    async def VerifyStream(
        self, request: pb.VerifyStreamRequest, context: aio.ServicerContext
    ) -> pb.VerifyStreamResponse:
        """Recompute a stream's hash chain; report the first broken link."""
        try:
            report = await _within_deadline(
                context, verify_stream(self._service.pool, request.stream_id)
            )
        except DomainError as exc:
            await _abort(context, exc)
        return verify_proto(report)

    async def ListStreams(
        self, request: pb.ListStreamsRequest, context: aio.ServicerContext
    ) -> pb.ListStreamsResponse:
        """Streams with their heads in stream_id order, a page at a time."""
        try:
            if request.org_id and not is_valid_segment(request.org_id):
                raise ValidationError("org_id", "must match [A-Za-z0-9_-]{1,64}")
            kinds = _KINDS.get(request.kind)
            if kinds is None:
                raise ValidationError("kind", "unknown stream kind")
            if request.page_size > LIST_STREAMS_MAX:
                raise ValidationError("page_size", f"must be <= {LIST_STREAMS_MAX}")
            limit = request.page_size or LIST_STREAMS_DEFAULT
            listing = await _within_deadline(
                context,
                self._service.list_streams(
                    org_id=request.org_id or None,
                    kinds=kinds,
                    after=request.page_token,
                    limit=limit,
                ),
            )
        except DomainError as exc:
            await _abort(context, exc)
        return pb.ListStreamsResponse(
            streams=[
                pb.StreamInfo(
                    stream_id=s.stream_id,
                    org_id=s.org_id,
                    head_seq=s.head_seq,
                    head_occurred_at_ms=s.head_occurred_at_ms,
                )
                for s in listing
            ],
            next_page_token=listing[-1].stream_id if len(listing) == limit else "",
        )
