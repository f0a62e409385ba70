"""HTTP route of the org audit (`GET /api/v1/audit`): who did what on an org's runs
and workers, for its admins and owners."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khala_runtime.domain.access import Action, require_access
from khala_runtime.domain.audit import AuditEntry, audit_cursor, parse_audit_cursor
from khala_runtime.handlers.context import audit_key, principal
from khala_runtime.handlers.schemas import AuditQuery, decode_query


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as the API answers it."""
    actor = entry.actor
    return {
        "event_id": entry.event_id,
        "stream_id": entry.stream_id,
        "subject_kind": entry.subject_kind,
        "subject_id": entry.subject_id,
        "stream_seq": entry.stream_seq,
        "type": entry.type,
        "occurred_at_ms": entry.occurred_at_ms,
        "actor": None
        if actor is None
        else {
            "kind": actor.kind,
            "id": actor.id,
            "session_id": actor.session_id,
            "device_id": actor.device_id,
            "surface": actor.surface,
        },
    }


async def read_audit(request: web.Request) -> web.Response:
    """GET /api/v1/audit?org_id=&after=&limit=: the org's actions, oldest first.
    An org the caller is no admin or owner of (or that does not exist) is 403."""
    caller = await principal(request)
    query = decode_query(AuditQuery, request.query)
    require_access(caller, query.org_id, Action.READ_AUDIT)
    entries = await request.app[audit_key].read(
        query.org_id, after=parse_audit_cursor(query.after), limit=query.limit
    )
    full = len(entries) == query.limit
    return web.json_response(
        {
            "org_id": query.org_id,
            "entries": [entry_json(entry) for entry in entries],
            "next_after": audit_cursor(entries[-1]) if full else None,
        }
    )


def add_routes(app: web.Application) -> None:
    """Mount the audit route."""
    app.router.add_get("/api/v1/audit", read_audit)
