"""Client of runtime's RuntimeService.ReadStream: gap fill, drift checks and rebuilds."""

from __future__ import annotations

import time

import grpc

from khala_common.grpc_server import TlsFiles, channel, service_metadata
from khala_projector import metrics
from openagents.runtime.v1.events_pb2 import RuntimeEvent
from openagents.runtime.v1.runtime_service_pb2 import ReadStreamRequest
from openagents.runtime.v1.runtime_service_pb2_grpc import RuntimeServiceStub


class RuntimeUnavailable(RuntimeError):
    """ReadStream failed (runtime down, deadline exceeded, refused)."""


class RuntimeReader:
    """Reads ranges of a runtime stream with the service credential and a deadline."""

    def __init__(
        self, target: str, service_token: str, timeout_s: float, *, tls: TlsFiles | None = None
    ) -> None:
        self._channel = channel(target, tls)
        self._stub = RuntimeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = service_metadata(service_token)
        self._timeout_s = timeout_s

    async def read_stream(
        self, stream_id: str, after_seq: int, up_to_seq: int, *, purpose: str = "gap"
    ) -> list[RuntimeEvent]:
        """Events of `stream_id` with after_seq < stream_seq <= up_to_seq (0: head), in order.

        `purpose` (gap, drift, rebuild) labels the replay duration metric.
        """
        request = ReadStreamRequest(stream_id=stream_id, after_seq=after_seq, up_to_seq=up_to_seq)
        events: list[RuntimeEvent] = []
        started = time.monotonic()
        try:
            call = self._stub.ReadStream(request, metadata=self._metadata, timeout=self._timeout_s)
            async for response in call:
                events.append(response.event)
        except grpc.aio.AioRpcError as exc:
            raise RuntimeUnavailable(
                f"ReadStream({stream_id}, {after_seq}, {up_to_seq}): {exc.code().name}: {exc.details()}"
            ) from None
        finally:
            metrics.REPLAY_SECONDS.labels(purpose).observe(time.monotonic() - started)
        return events

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
