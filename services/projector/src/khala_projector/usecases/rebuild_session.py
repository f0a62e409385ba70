"""The resources of one `khala-projector rebuild` invocation: its own small pool,
a runtime client and, when the broker is reachable, a fanout doorbell for the
post-switch head frames (without one, gateways notice the new epoch from their
head poll). Everything is closed when the session ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from khala_common.broker import Broker
from khala_common.db import create_pool
from khala_common.grpc_server import tls_of
from khala_common.logs import get_logger
from khala_common.topology import Topology
from khala_projector.adapters.fanout import Doorbell, fanout_doorbell
from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.usecases.rebuild import Progress, Rebuilder

log = get_logger("projector.rebuild")


@contextlib.asynccontextmanager
async def rebuild_session(
    settings: Settings, progress: Progress | None = None
) -> AsyncIterator[Rebuilder]:
    """A Rebuilder over its own connections, closed when the block exits."""
    pool = await create_pool(settings.database_url, SCHEMA, max_size=4)
    reader = RuntimeReader(
        settings.runtime_grpc_target,
        settings.service_token,
        settings.runtime_grpc_timeout_s,
        tls=tls_of(settings),
    )
    broker: Broker | None = None
    try:
        broker, doorbell = await _doorbell(settings)
        yield Rebuilder(
            RebuildStore(pool),
            reader,
            chunk=settings.rebuild_chunk,
            progress=progress,
            doorbell=doorbell,
        )
    finally:
        if broker is not None:
            await broker.close()
        await reader.close()
        await pool.close()


async def _doorbell(settings: Settings) -> tuple[Broker | None, Doorbell | None]:
    """A fanout publisher for the post-switch doorbells, or none if the broker is down."""
    topology = Topology(prefix=settings.amqp_prefix)
    broker = Broker(settings.amqp_url, topology)
    try:
        await broker.connect()
        await broker.declare_exchanges()
    except Exception as exc:
        log.warning("broker unavailable; no doorbells after the switch", error=repr(exc))
        await broker.close()
        return None, None
    return broker, fanout_doorbell(broker)
