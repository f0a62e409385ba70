"""gRPC edge: `openagents.sync.v1.ProjectorAdmin` (service credential enforced by
the server interceptor)."""

from __future__ import annotations

import grpc
from grpc import aio

from khala_projector.usecases.projector import Projector
from openagents.sync.v1 import projector_admin_pb2 as pb
from openagents.sync.v1.projector_admin_pb2_grpc import ProjectorAdminServicer

MAX_STREAMS = 1000
# Which services may call which method (docs/security.md "Service identity").
CALLERS = {
    f"/{pb.DESCRIPTOR.services_by_name['ProjectorAdmin'].full_name}/GetProjectionStatus": (
        frozenset({"runtime", "operator"})
    ),
}


class ProjectorAdmin(ProjectorAdminServicer):
    """Projection status of runtime streams, for runtime's snapshot API."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def GetProjectionStatus(
        self, request: pb.GetProjectionStatusRequest, context: aio.ServicerContext
    ) -> pb.GetProjectionStatusResponse:
        """in_sync when checkpoint >= head, else lagging with lag_events = head - checkpoint."""
        if len(request.streams) > MAX_STREAMS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_STREAMS} streams per call"
            )
        if any(not head.stream_id for head in request.streams):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream_id must not be empty")
        heads = [(head.stream_id, head.head_seq) for head in request.streams]
        statuses = await self._projector.statuses(heads)
        return pb.GetProjectionStatusResponse(
            statuses=[
                pb.ProjectionStatus(
                    stream_id=s.stream_id,
                    state=pb.PROJECTION_STATE_IN_SYNC if s.in_sync else pb.PROJECTION_STATE_LAGGING,
                    checkpoint_seq=s.checkpoint_seq,
                    lag_events=s.lag_events,
                    lag_ms=round(s.lag_seconds(head.head_occurred_at_ms) * 1000),
                    checkpoint_occurred_at_ms=s.checkpoint_at_ms,
                )
                for s, head in zip(statuses, request.streams, strict=True)
            ]
        )
