"""Consumes `khala.control` revocations and evicts the covered sockets (4009).

Bound to `session.revoked`, `device.revoked` and `user.revoked` with an
exclusive auto-delete queue per instance, so every gateway sees every
revocation; eviction happens as the message arrives (well within 1 s).
"""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from google.protobuf.message import DecodeError

from khala_common.broker import Broker
from khala_common.logs import get_logger
from khala_gateway import metrics
from khala_gateway.delivery.hub import Hub
from openagents.control.v1 import revocation_pb2

log = get_logger("khala_gateway.control")

ROUTING_KEYS = ("session.revoked", "device.revoked", "user.revoked")


class ControlConsumer:
    """Revocation consumer of one gateway instance."""

    def __init__(self, broker: Broker, hub: Hub, queue_name: str) -> None:
        self._broker = broker
        self._hub = hub
        self.queue_name = queue_name
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        """Declare the queue, bind the revocation keys and consume."""
        exchange = await self._broker.exchange(self._broker.topology.control)
        self._queue = await self._broker.channel.declare_queue(
            self.queue_name, exclusive=True, auto_delete=True
        )
        for key in ROUTING_KEYS:
            await self._queue.bind(exchange, routing_key=key)
        self._tag = await self._queue.consume(self._on_message, no_ack=True)

    async def stop(self) -> None:
        """Stop consuming."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:
                pass
        self._tag = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        metrics.REVOCATIONS.inc()
        try:
            revocation = revocation_pb2.Revocation.FromString(message.body)
        except DecodeError:
            log.warning("undecodable revocation", routing_key=message.routing_key)
            return
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
