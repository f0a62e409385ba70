"""Client of the projector's `ProjectorAdmin.GetProjectionStatus`.

Snapshots and lists carry each stream's projection status. The projector is
asked once per read, for all the streams of the read, with runtime's head seq
of each, under a short deadline. If it cannot answer (down, slow, refusing),
every stream reads `unknown`: a read never fails because of the projector.
"""

from __future__ import annotations

from collections.abc import Sequence

from grpc import aio

from khala_common.grpc_server import TlsFiles, channel, service_metadata
from khala_common.logs import get_logger
from khala_runtime import metrics
from khala_runtime.domain.projection import UNKNOWN, Projection, projection_of
from openagents.sync.v1 import projector_admin_pb2 as pb
from openagents.sync.v1 import projector_admin_pb2_grpc

MAX_STREAMS_PER_CALL = 1000

log = get_logger("projector_client")


class ProjectorClient:
    """GetProjectionStatus over gRPC with the service credential and a deadline."""

    def __init__(
        self, target: str, service_token: str, *, timeout_s: float, tls: TlsFiles | None = None
    ) -> None:
        self._channel = channel(target, tls)
        self._stub = projector_admin_pb2_grpc.ProjectorAdminStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = service_metadata(service_token)
        self._timeout_s = timeout_s

    async def statuses(self, heads: Sequence[tuple[str, int]]) -> dict[str, Projection]:
        """Projection of each `(stream_id, head_seq)`; `unknown` for all on any failure."""
        if not heads:
            return {}
        result: dict[str, Projection] = {}
        for start in range(0, len(heads), MAX_STREAMS_PER_CALL):
            result.update(await self._call(heads[start : start + MAX_STREAMS_PER_CALL]))
        return result

    async def _call(self, heads: Sequence[tuple[str, int]]) -> dict[str, Projection]:
        request = pb.GetProjectionStatusRequest(
            streams=[pb.StreamHead(stream_id=sid, head_seq=seq) for sid, seq in heads]
        )
        try:
            response = await self._stub.GetProjectionStatus(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
        except Exception as exc:  # any failure reads as unknown; never fail the read
            metrics.PROJECTOR_STATUS_FAILURES.inc()
            code = exc.code().name if isinstance(exc, aio.AioRpcError) else type(exc).__name__
            log.debug("projection status unavailable", code=code)
            return {sid: UNKNOWN for sid, _ in heads}
        answered = {
            s.stream_id: projection_of(
                None
                if s.state == pb.PROJECTION_STATE_UNSPECIFIED
                else s.state == pb.PROJECTION_STATE_IN_SYNC,
                s.lag_events,
            )
            for s in response.statuses
        }
        return {sid: answered.get(sid, UNKNOWN) for sid, _ in heads}

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
