"""Consumes `khala.control` revocations and evicts the covered sockets (4009).

Bound to `session.revoked`, `device.revoked` and `user.revoked` with a queue
per instance, so every gateway sees every revocation; eviction happens as the
message arrives (well within 1 s), and each revoked session id joins the set
Hello and RefreshAuth are checked against (`domain/revocations.py`). The
queue expires (`x-expires`) rather than being exclusive, so it keeps what is
published while the connection is re-established; after every reconnect the
set is reloaded from control as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from google.protobuf.message import DecodeError

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_gateway import metrics
from khala_gateway.domain.revocations import RevokedSessions
from khala_gateway.usecases.hub import Hub
from openagents.control.v1 import revocation_pb2

log = get_logger("khala_gateway.control")

ROUTING_KEYS = ("session.revoked", "device.revoked", "user.revoked")
# A gone instance's queue is deleted by the broker after this long unused.
QUEUE_EXPIRES_MS = 5 * 60 * 1000


class ControlConsumer:
    """Revocation consumer of one gateway instance."""

    def __init__(
        self,
        broker: Broker,
        hub: Hub,
        queue_name: str,
        revoked: RevokedSessions,
        on_reconnect: Callable[..., None],
    ) -> None:
        self._broker = broker
        self._hub = hub
        self._revoked = revoked
        self._on_reconnect = on_reconnect
        self.queue_name = queue_name
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        """Declare the queue, bind the revocation keys and consume."""
        exchange = await self._broker.exchange(self._broker.topology.control)
        self._queue = await self._broker.channel.declare_queue(
            self.queue_name, durable=True, arguments={"x-expires": QUEUE_EXPIRES_MS}
        )
        for key in ROUTING_KEYS:
            await self._queue.bind(exchange, routing_key=key)
        self._tag = await self._queue.consume(self._on_message, no_ack=True)
        self._broker.channel.reopen_callbacks.add(self._on_reconnect)

    async def stop(self) -> None:
        """Stop consuming and delete the queue (a stopped instance needs it no more)."""
        with contextlib.suppress(Exception):
            self._broker.channel.reopen_callbacks.discard(self._on_reconnect)
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
            with contextlib.suppress(Exception):
                await self._queue.delete(if_unused=False, if_empty=False)
        self._tag = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        metrics.REVOCATIONS.inc()
        try:
            revocation = revocation_pb2.Revocation.FromString(message.body)
        except DecodeError:
            log.warning("undecodable revocation", routing_key=message.routing_key)
            return
        for session_id in revocation.session_ids:
            self._revoked.add(session_id, revocation.revoked_at_ms)
        closed = self._hub.revoke(
            revocation.kind,
            tuple(revocation.session_ids),
            revocation.user_id,
            revocation.device_id,
        )
        log.info(
            "revocation applied",
            kind=revocation.kind,
            sessions=len(revocation.session_ids),
            sockets_closed=closed,
        )
