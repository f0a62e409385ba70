"""gRPC `openagents.runtime.v1.RuntimeService`: the internal API of runtime.

Calls are trusted by the service credential (checked by khala_common's
interceptor before any method runs). AppendEvents takes the same domain path
as the HTTP append; ReadStream streams a stream's events in seq order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from grpc import aio

from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.ids import is_valid_segment
from khala_runtime.domain.model import RunHead
from khala_runtime.domain.requests import check_batch, check_event, payload_from_bytes
from khala_runtime.handlers.errors import GRPC_STATUS
from khala_runtime.service import RunService
from openagents.runtime.v1 import runtime_service_pb2 as pb
from openagents.runtime.v1 import runtime_service_pb2_grpc

SERVICE_NAME = "openagents.runtime.v1.RuntimeService"
ERROR_CODE_KEY = "khala-error-code"


async def _abort(context: aio.ServicerContext, exc: DomainError) -> NoReturn:
    status = GRPC_STATUS.get(exc.code)
    assert status is not None, exc.code
    await context.abort(status, exc.message, trailing_metadata=((ERROR_CODE_KEY, exc.code),))
    raise AssertionError("unreachable")  # pragma: no cover


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
    """RuntimeService over RunService."""

    def __init__(self, service: RunService) -> None:
        self._service = service

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
            receipt, _ = await self._service.append(
                request.run_id, inputs, expected_seq=expected
            )
        except DomainError as exc:
            await _abort(context, exc)
        return pb.AppendEventsResponse(receipt=receipt)

    async def GetRun(self, request: pb.GetRunRequest, context: aio.ServicerContext) -> pb.GetRunResponse:
        """A run's snapshot."""
        try:
            head = await self._service.get_run(request.run_id)
        except DomainError as exc:
            await _abort(context, exc)
        return pb.GetRunResponse(run=run_proto(head))

    async def GetWorker(
        self, request: pb.GetWorkerRequest, context: aio.ServicerContext
    ) -> pb.GetWorkerResponse:
        """Workers are a later milestone: UNIMPLEMENTED."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "workers are not implemented yet")
        raise AssertionError("unreachable")  # pragma: no cover

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: aio.ServicerContext
    ) -> pb.ListWorkersResponse:
        """Workers are a later milestone: UNIMPLEMENTED."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "workers are not implemented yet")
        raise AssertionError("unreachable")  # pragma: no cover
