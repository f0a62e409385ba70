"""Revocation delivery to the `khala.control` exchange: at-least-once.

A revocation is written to `revocation_outbox` in the same transaction that
marks the sessions revoked, so a committed revocation is never lost, even if
the broker is down or the process dies right after the commit. The relay
publishes pending rows in commit order with publisher confirms and marks a row
published only after its confirm; a crash in between republishes it with the
same `message_id` (consumers dedupe, and evicting an evicted session is a
no-op). Several control instances may run relays: `FOR UPDATE SKIP LOCKED`
keeps two of them from publishing the same row at the same time.

Every revocation is an `openagents.control.v1.Revocation` listing the revoked
session ids, with a kind and its routing key: SESSION `session.revoked`
(logout, refresh token reuse), DEVICE `device.revoked` (a device signed out:
every session of the user on that `device_id`), USER `user.revoked`
(revoke-all: every session of the user).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import asyncpg

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_control.domain.models import DeviceSession
from khala_control.metrics import REVOCATIONS_PUBLISHED
from khala_control.storage import outbox
from openagents.control.v1 import revocation_pb2
from openagents.control.v1.revocation_pb2 import RevocationKind

SESSION = revocation_pb2.REVOCATION_KIND_SESSION
DEVICE = revocation_pb2.REVOCATION_KIND_DEVICE
USER = revocation_pb2.REVOCATION_KIND_USER
ROUTING_KEYS = {SESSION: "session.revoked", DEVICE: "device.revoked", USER: "user.revoked"}
TYPE_NAME = revocation_pb2.Revocation.DESCRIPTOR.full_name
BATCH = 100
KEEP_PUBLISHED_S = 7 * 24 * 3600.0
PURGE_EVERY = 500
log = get_logger("revocations")


async def enqueue_revocation(
    conn: asyncpg.Connection,
    revoked: Sequence[DeviceSession],
    *,
    kind: RevocationKind,
    user_id: str,
    reason: str,
    now_ms: int,
) -> str:
    """Queue one Revocation for `revoked` in the caller's transaction; returns its message_id.

    `device_id` is set when every revoked session is on the same device.
    """
    devices = {session.device_id for session in revoked}
    message = revocation_pb2.Revocation(
        kind=kind,
        session_ids=[session.session_id for session in revoked],
        user_id=user_id,
        device_id=devices.pop() if len(devices) == 1 else "",
        revoked_at_ms=now_ms,
        reason=reason,
    )
    message_id = f"revocation-{uuid.uuid4().hex}"
    await outbox.enqueue(conn, message_id, ROUTING_KEYS[kind], message.SerializeToString())
    return message_id


class RevocationRelay:
    """Publishes the outbox; `run` is owned (cancelled and awaited) by the app."""

    def __init__(self, pool: asyncpg.Pool, broker: Broker, exchange: str, poll_s: float) -> None:
        self._pool = pool
        self._broker = broker
        self._exchange = exchange
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def kick(self) -> None:
        """Publish soon (called after a revocation commits)."""
        self._wake.set()

    async def run(self) -> None:
        """Drain on every kick and every `poll_s` until cancelled."""
        rounds = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            self._wake.clear()
            try:
                await self.drain()
                rounds += 1
                if rounds % PURGE_EVERY == 0:
                    async with self._pool.acquire() as conn:
                        await outbox.purge_published(conn, KEEP_PUBLISHED_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revocation publish failed; will retry", error=repr(exc))

    async def drain(self) -> int:
        """Publish every pending revocation; returns how many were confirmed."""
        published = 0
        async with self._lock:
            while True:
                failure: Exception | None = None
                async with self._pool.acquire() as conn, conn.transaction():
                    batch = await outbox.claim_pending(conn, BATCH)
                    for message in batch:
                        try:
                            await self._broker.publish_raw(
                                self._exchange,
                                message.routing_key,
                                message.body,
                                type_name=TYPE_NAME,
                                message_id=message.message_id,
                                persistent=True,
                            )
                        except Exception as exc:
                            failure = exc
                            break
                        await outbox.mark_published(conn, message.outbox_id)
                        published += 1
                        REVOCATIONS_PUBLISHED.inc()
                if failure is not None:
                    raise failure
                if len(batch) < BATCH:
                    return published
