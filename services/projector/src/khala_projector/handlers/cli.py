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

from khala_common.topics import is_valid_topic
from khala_common.topology import Topology
from khala_projector.adapters.dlq import DeadLetterQueue
from khala_projector.adapters.runtime_reader import RuntimeUnavailable
from khala_projector.domain.projection import Projection
from khala_projector.domain.rebuild import RebuildScope
from khala_projector.handlers.progress import ProgressBar
from khala_projector.settings import Settings
from khala_projector.usecases.rebuild import RebuildError
from khala_projector.usecases.rebuild_session import rebuild_session


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
    try:
        async with rebuild_session(settings, ProgressBar(err)) as rebuilder:
            if abandon:
                deleted = await rebuilder.abandon(scope)
                abandoned = {"abandoned": scope.describe(), "frames_deleted": deleted}
                print(json.dumps(abandoned), file=out)
                return 0
            report = await rebuilder.run(scope)
    except (RebuildError, RuntimeUnavailable) as exc:
        return _fail(err, 1, f"rebuild: {exc}")
    print(json.dumps(asdict(report), sort_keys=True), file=out)
    return 0


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
