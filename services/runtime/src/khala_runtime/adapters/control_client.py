"""Client of control's `ControlService.IntrospectSession`, cached briefly.

Each session's answer (active or not, with memberships) is cached for
`ttl_s` (0.5 s), so a revoked session is refused, and a new membership takes
effect, well within 1 s, while control sees at most two calls a second per
busy session rather than one per request. Concurrent misses for one session
share a single call (no burst of identical calls when an entry expires).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from grpc import aio

from khala_common.grpc_server import TlsFiles, channel, service_metadata
from openagents.control.v1 import control_service_pb2, control_service_pb2_grpc

CACHE_TTL_S = 0.5
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
        tls: TlsFiles | None = None,
    ) -> None:
        self._channel = channel(target, tls)
        self._stub = control_service_pb2_grpc.ControlServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = service_metadata(service_token)
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, control_service_pb2.IntrospectSessionResponse]] = {}
        self._inflight: dict[
            str, asyncio.Future[tuple[float, control_service_pb2.IntrospectSessionResponse]]
        ] = {}

    async def introspect(self, session_id: str) -> control_service_pb2.IntrospectSessionResponse:
        """The session's state and memberships (cached for ttl_s)."""
        cached = self._cache.get(session_id)
        if cached is not None and self._clock() - cached[0] < self._ttl_s:
            return cached[1]
        pending = self._inflight.get(session_id)
        if pending is None:
            pending = asyncio.ensure_future(self._call(session_id))
            self._inflight[session_id] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(session_id, None))
        return (await asyncio.shield(pending))[1]

    async def _call(
        self, session_id: str
    ) -> tuple[float, control_service_pb2.IntrospectSessionResponse]:
        # The entry is as old as the call's start: an answer is never kept longer.
        started = self._clock()
        try:
            response = await self._stub.IntrospectSession(
                control_service_pb2.IntrospectSessionRequest(session_id=session_id),
                metadata=self._metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except aio.AioRpcError as exc:
            raise ControlUnavailable(f"{exc.code().name}: {exc.details()}") from None
        if len(self._cache) >= _MAX_ENTRIES:
            self._evict(started)
        self._cache[session_id] = (started, response)
        return started, response

    def _evict(self, now: float) -> None:
        expired = [sid for sid, (at, _) in self._cache.items() if now - at >= self._ttl_s]
        for sid in expired:
            del self._cache[sid]
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
