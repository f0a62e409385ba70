"""Control's list of revoked sessions, loaded into the gateway's RevokedSessions.

The guarantee (a committed revocation is refused even if it was published while
this instance was not listening) is stated in `domain/revocations.py`; this
client is its reload half: at start and after every broker reconnect it lists
control's revoked sessions (gRPC `ListRevokedSessions`, service credential),
retrying every `RETRY_S` until it succeeds, and prunes expired entries.
"""

from __future__ import annotations

import asyncio
import contextlib

from grpc import aio

from khala_common.grpc_server import TlsFiles, channel, service_metadata
from khala_common.logs import get_logger
from khala_gateway.domain.revocations import RevokedSessions
from openagents.control.v1 import control_service_pb2, control_service_pb2_grpc

log = get_logger("khala_gateway.revocations")

RETRY_S = 1.0
PRUNE_EVERY_S = 60.0
CALL_TIMEOUT_S = 5.0


class RevocationSync:
    """Loads control's list of revoked sessions; `run` is owned by the app."""

    def __init__(
        self,
        target: str,
        service_token: str,
        revoked: RevokedSessions,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        self._channel = channel(target, tls)
        self._stub = control_service_pb2_grpc.ControlServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = service_metadata(service_token)
        self._revoked = revoked
        self._wanted = asyncio.Event()
        self._wanted.set()
        self.synced = asyncio.Event()
        self.loads = 0

    def request(self, *_: object) -> None:
        """Reload soon (the broker reconnected); usable as an aio-pika callback."""
        self._wanted.set()

    async def load(self) -> int:
        """One reload from control; returns how many sessions it listed."""
        reply = await self._stub.ListRevokedSessions(
            control_service_pb2.ListRevokedSessionsRequest(),
            metadata=self._metadata,
            timeout=CALL_TIMEOUT_S,
        )
        for entry in reply.sessions:
            self._revoked.add(entry.session_id, entry.revoked_at_ms, entry.refuse_until_ms)
        self.loads += 1
        self.synced.set()
        return len(reply.sessions)

    async def run(self) -> None:
        """Reload whenever asked (and first at start), retrying until it succeeds."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), timeout=PRUNE_EVERY_S)
            self._revoked.prune()
            if not self._wanted.is_set():
                continue
            self._wanted.clear()
            try:
                listed = await self.load()
                log.info("revoked sessions loaded", listed=listed, held=len(self._revoked))
            except aio.AioRpcError as exc:
                log.warning(
                    "revoked sessions could not be loaded; retrying",
                    error=f"{exc.code().name}: {exc.details()}",
                )
                self._wanted.set()
                await asyncio.sleep(RETRY_S)

    async def check(self) -> None:
        """Readiness: the list was loaded at least once."""
        if not self.synced.is_set():
            raise RuntimeError("revoked sessions not loaded from control yet")

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
