"""Revoked sessions, refused at Hello and RefreshAuth (`reauth_required`, close 4009).

Guarantee: once control has committed a session's revocation, this gateway
refuses every token of that session (by its `sid`) until no such token can
still verify, even if the revocation was published while this instance was
not listening:

- Live: `ControlConsumer` adds each `khala.control` Revocation as it arrives
  (and the hub evicts the session's sockets). Its queue has `x-expires`, not
  `exclusive`, so it outlives a short broker disconnect and keeps what was
  published meanwhile; the queue of a gateway that is gone expires on its own.
- Reload: at start, and after every broker reconnect (the channel reopening),
  the whole set is reloaded from control's `ListRevokedSessions` (service
  credential), retried every `RETRY_S` until it succeeds. Until the first load
  succeeded the `revocations` readiness check fails.
- Forgetting: an entry is dropped after `refuse_until_ms` (control's answer:
  revocation time + the longest token lifetime + skew) or, for a broker
  message, after `revoked_at_ms + retention_s`; past it every token of the
  session has expired anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from grpc import aio

from khala_common.grpc_server import insecure_channel, service_metadata
from khala_common.logs import get_logger
from openagents.control.v1 import control_service_pb2, control_service_pb2_grpc

log = get_logger("khala_gateway.revocations")

RETRY_S = 1.0
PRUNE_EVERY_S = 60.0
CALL_TIMEOUT_S = 5.0


class RevokedSessions:
    """Session ids whose tokens are refused, each until its own deadline."""

    def __init__(self, retention_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._retention_ms = int(retention_s * 1000)
        self._clock = clock
        self._until_ms: dict[str, int] = {}

    def add(self, session_id: str, revoked_at_ms: int, refuse_until_ms: int = 0) -> None:
        """Refuse `session_id` until `refuse_until_ms` (default: revoked_at + retention)."""
        if not session_id:
            return
        revoked_at_ms = revoked_at_ms or int(self._clock() * 1000)
        until = max(refuse_until_ms, revoked_at_ms + self._retention_ms)
        if until > self._until_ms.get(session_id, 0):
            self._until_ms[session_id] = until

    def __contains__(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        until = self._until_ms.get(session_id)
        return until is not None and until > self._clock() * 1000

    def __len__(self) -> int:
        return len(self._until_ms)

    def prune(self) -> int:
        """Forget entries past their deadline; returns how many."""
        now_ms = self._clock() * 1000
        expired = [sid for sid, until in self._until_ms.items() if until <= now_ms]
        for sid in expired:
            del self._until_ms[sid]
        return len(expired)


class RevocationSync:
    """Loads control's list of revoked sessions; `run` is owned by the app."""

    def __init__(self, target: str, service_token: str, revoked: RevokedSessions) -> None:
        self._channel = insecure_channel(target)
        self._stub = control_service_pb2_grpc.ControlServiceStub(self._channel)
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
