"""Operator commands besides `serve`: `rebuild` and `dlq list | replay`.

Each command prints its result as JSON on stdout (progress and errors go to
stderr) and returns the process exit code: 0 done, 1 refused or failed, 2 bad
arguments.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TextIO

from khala_common.broker import Broker
from khala_common.db import create_pool
from khala_common.logs import get_logger
from khala_common.topics import is_valid_topic
from khala_common.topology import Topology
from khala_projector.dlq import DeadLetterQueue
from khala_projector.domain.projection import Projection
from khala_projector.domain.rebuild import RebuildScope
from khala_projector.progress import ProgressBar
from khala_projector.rebuild import Doorbell, Rebuilder, RebuildError, fanout_doorbell
from khala_projector.runtime_reader import RuntimeReader, RuntimeUnavailable
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage.rebuild_store import RebuildStore

log = get_logger("projector.cli")


def _fail(err: TextIO, code: int, message: str) -> int:
    print(f"khala-projector: {message}", file=err)
    return code


async def rebuild_command(
    settings: Settings,
    projection: str,
    org_id: str,
    *,
    abandon: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """`rebuild --projection runs|workers [--org ORG] [--abandon]`."""
    if org_id and ("." in org_id or not is_valid_topic(org_id)):
        return _fail(err, 2, f"--org {org_id!r} is not an org id ([A-Za-z0-9_-]{{1,64}})")
    scope = RebuildScope(Projection(projection), org_id)
    pool = await create_pool(settings.database_url, SCHEMA, max_size=4)
    reader = RuntimeReader(
        settings.runtime_grpc_target, settings.service_token, settings.runtime_grpc_timeout_s
    )
    broker: Broker | None = None
    try:
        broker, doorbell = await _doorbell(settings)
        rebuilder = Rebuilder(
            RebuildStore(pool),
            reader,
            chunk=settings.rebuild_chunk,
            progress=ProgressBar(err),
            doorbell=doorbell,
        )
        if abandon:
            deleted = await rebuilder.abandon(scope)
            print(json.dumps({"abandoned": scope.describe(), "frames_deleted": deleted}), file=out)
            return 0
        report = await rebuilder.run(scope)
        print(json.dumps(asdict(report), sort_keys=True), file=out)
        return 0
    except (RebuildError, RuntimeUnavailable) as exc:
        return _fail(err, 1, f"rebuild: {exc}")
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


async def dlq_command(
    settings: Settings,
    action: str,
    limit: int,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """`dlq list [--limit N]` (one JSON line per message) or `dlq replay [--limit N]`."""
    if limit < 0:
        return _fail(err, 2, "--limit must be >= 0")
    topology = Topology(prefix=settings.amqp_prefix)
    try:
        async with DeadLetterQueue(settings.amqp_url, topology) as dlq:
            if action == "list":
                depth = await dlq.depth()
                for letter in await dlq.peek(limit or depth):
                    print(letter.to_json(), file=out)
                print(f"{depth} messages in {topology.projector_dlq}", file=err)
                return 0
            replayed = await dlq.replay(limit)
            for letter in replayed:
                print(letter.to_json(), file=out)
            print(
                f"replayed {len(replayed)} messages to {topology.runtime_events}; "
                f"{await dlq.depth()} left in {topology.projector_dlq}",
                file=err,
            )
            return 0
    except Exception as exc:
        return _fail(err, 1, f"dlq {action}: {exc!r}")
