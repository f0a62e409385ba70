"""The narrow interfaces between the delivery use cases: what a connection needs
from the hub, and what starting a subscription needs from its connection."""

from __future__ import annotations

from typing import Protocol

from khala_gateway.domain.limits import Limits
from khala_gateway.domain.principal import Principal
from khala_gateway.metrics import TopicStats
from khala_gateway.storage.topic_log import TopicLog
from khala_gateway.usecases.subscription import Owner, ReplayGate, Subscription
from openagents.sync.v1 import ws_pb2


class HubPort(Protocol):
    """What a connection needs from the process-wide hub (implemented by Hub)."""

    log: TopicLog
    replays: ReplayGate

    def attach(self, sub: Subscription) -> None: ...

    def detach(self, sub: Subscription) -> None: ...

    async def acquire_binding(self, topic: str) -> None: ...

    async def release_binding(self, topic: str) -> None: ...

    def stats_for(self, topic: str) -> TopicStats: ...


class Subscriber(Owner, Protocol):
    """What subscribe/unsubscribe need from a socket (implemented by Connection)."""

    connection_id: str
    hub: HubPort
    principal: Principal | None
    subs: dict[str, Subscription]
    limits: Limits
    closing: bool

    def push_control(self, message: ws_pb2.ServerMessage) -> None: ...

    async def drop(self, sub: Subscription) -> None: ...
