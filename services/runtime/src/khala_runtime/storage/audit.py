"""SQL of the org audit: an org's events with their actors, keyset-paged over the
`events_audit` index (org_id, occurred_at_ms, stream_id, stream_seq)."""

from __future__ import annotations

import json
from typing import Any

from khala_runtime.domain.actor import Actor
from khala_runtime.domain.audit import AuditEntry, Position
from khala_runtime.storage.events import Executor
from openagents.runtime.v1.events_pb2 import STREAM_KIND_RUN, STREAM_KIND_WORKER

_KINDS = {STREAM_KIND_RUN: "run", STREAM_KIND_WORKER: "worker"}


def _actor(raw: Any) -> Actor | None:
    fields = json.loads(raw) if isinstance(raw, str) else raw
    if not fields:
        return None  # written before actors were recorded
    return Actor(
        kind=str(fields.get("kind", "")),
        id=str(fields.get("id", "")),
        session_id=str(fields.get("session_id", "")),
        device_id=str(fields.get("device_id", "")),
        surface=str(fields.get("surface", "")),
    )


async def read_audit(db: Executor, org_id: str, *, after: Position, limit: int) -> list[AuditEntry]:
    """Up to `limit` events of `org_id` after the position `after`
    ((occurred_at_ms, stream_id, stream_seq)), oldest first."""
    rows = await db.fetch(
        "SELECT event_id, stream_id, stream_kind, subject_id, stream_seq, type, "
        "occurred_at_ms, actor FROM events "
        "WHERE org_id = $1 AND (occurred_at_ms, stream_id, stream_seq) > ($2, $3, $4) "
        "ORDER BY occurred_at_ms, stream_id, stream_seq LIMIT $5",
        org_id,
        *after,
        limit,
    )
    return [
        AuditEntry(
            event_id=str(row["event_id"]),
            stream_id=row["stream_id"],
            subject_kind=_KINDS.get(row["stream_kind"], "unknown"),
            subject_id=row["subject_id"],
            stream_seq=row["stream_seq"],
            type=row["type"],
            occurred_at_ms=row["occurred_at_ms"],
            actor=_actor(row["actor"]),
        )
        for row in rows
    ]
