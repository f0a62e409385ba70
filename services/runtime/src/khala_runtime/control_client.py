"""Client of control's `ControlService.IntrospectSession`, cached briefly.

Each session's answer (active or not, with memberships) is cached for
`ttl_s` (2 s), so a new membership or a revoked session takes effect within
that time without control seeing one call per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from grpc import aio

from khala_common.grpc_server import insecure_channel, service_metadata
from openagents.control.v1 import control_service_pb2, control_service_pb2_grpc

CACHE_TTL_S = 2.0
CALL_TIMEOUT_S = 2.0
_MAX_ENTRIES = 10_000


class ControlUnavailable(Exception):
    """Control could not answer an introspection."""


class ControlClient:
    """IntrospectSession over gRPC with the service credential and a TTL cache."""

    def __init__(
        self,
        target: str,
        service_token: str,
        *,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = insecure_channel(target)
        self._stub = control_service_pb2_grpc.ControlServiceStub(self._channel)
        self._metadata = service_metadata(service_token)
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, control_service_pb2.IntrospectSessionResponse]] = {}

    async def introspect(self, session_id: str) -> control_service_pb2.IntrospectSessionResponse:
        """The session's state and memberships (cached for ttl_s)."""
        now = self._clock()
        cached = self._cache.get(session_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            response = await self._stub.IntrospectSession(
                control_service_pb2.IntrospectSessionRequest(session_id=session_id),
                metadata=self._metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except aio.AioRpcError as exc:
            raise ControlUnavailable(f"{exc.code().name}: {exc.details()}") from None
        if len(self._cache) >= _MAX_ENTRIES:
            self._evict(now)
        self._cache[session_id] = (now, response)
        return response

    def _evict(self, now: float) -> None:
        expired = [sid for sid, (at, _) in self._cache.items() if now - at >= self._ttl_s]
        for sid in expired:
            del self._cache[sid]
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
