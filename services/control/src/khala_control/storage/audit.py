"""The audit log: append-only records of security-relevant actions.

`record` writes one entry inside the caller's transaction (the entry commits
or rolls back with the change it describes). `write_batch` writes many
entries at once for the buffered writer (`usecases/audit_writer.py`). Each
entry is also indexed under every org it concerns (`audit_log_orgs`).

Entries often quote what a client sent (a refused surface or topic). Postgres
text and jsonb cannot hold NUL, so NUL characters are written as U+FFFD: one
such entry must never make a whole buffered batch unwritable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from khala_control.domain.models import StoredEntry


@dataclass(frozen=True)
class AuditEntry:
    """One audited action; `org_ids` are the orgs it concerns (may be empty)."""

    action: str
    at: datetime
    user_id: str | None = None
    session_id: str | None = None
    org_ids: tuple[str, ...] = ()
    client_ip: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def detail_json(self) -> str:
        """The detail as canonical JSON text (NUL written as U+FFFD)."""
        return json.dumps(_clean(dict(self.detail)), sort_keys=True, separators=(",", ":"))

    def columns(self) -> tuple[Any, ...]:
        """at, action, user_id, session_id, org_id, client_ip, detail (storable)."""
        org_id = self.org_ids[0] if len(self.org_ids) == 1 else None
        return (
            self.at,
            _clean(self.action),
            _clean(self.user_id),
            _clean(self.session_id),
            _clean(org_id),
            _clean(self.client_ip),
            self.detail_json(),
        )

    def org_list(self) -> list[str]:
        """The orgs it concerns, deduplicated in order (storable)."""
        return [_clean(org_id) for org_id in dict.fromkeys(self.org_ids)]


def _clean(value: Any) -> Any:
    """`value` with NUL in every string (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


_INSERT_ONE = """
WITH entry AS (
    INSERT INTO audit_log (at, action, user_id, session_id, org_id, client_ip, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
    RETURNING audit_id
)
INSERT INTO audit_log_orgs (org_id, audit_id)
SELECT DISTINCT org, entry.audit_id FROM entry, unnest($8::text[]) AS org
"""
_AUDIT_COLUMNS = [
    "audit_id",
    "at",
    "action",
    "user_id",
    "session_id",
    "org_id",
    "client_ip",
    "detail",
]


async def record(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    """Append one entry (in the caller's transaction, if any)."""
    await conn.execute(_INSERT_ONE, *entry.columns(), entry.org_list())


async def write_batch(conn: asyncpg.Connection, entries: Sequence[AuditEntry]) -> None:
    """Append many entries with two COPYs (call inside a transaction)."""
    ids = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('audit_log', 'audit_id')) AS id "
        "FROM generate_series(1, $1)",
        len(entries),
    )
    audit_ids = sorted(row["id"] for row in ids)
    await conn.copy_records_to_table(
        "audit_log",
        columns=_AUDIT_COLUMNS,
        records=[
            (audit_id, *entry.columns()) for audit_id, entry in zip(audit_ids, entries, strict=True)
        ],
    )
    links = [
        (org_id, audit_id)
        for audit_id, entry in zip(audit_ids, entries, strict=True)
        for org_id in entry.org_list()
    ]
    if links:
        await conn.copy_records_to_table(
            "audit_log_orgs", columns=["org_id", "audit_id"], records=links
        )


async def page_for_org(
    conn: asyncpg.Connection, org_id: str, *, before: int | None, limit: int
) -> list[StoredEntry]:
    """Entries concerning `org_id`, newest first, with audit_id < `before` if given."""
    rows = await conn.fetch(
        """
        SELECT a.audit_id, a.at, a.action, a.user_id, a.session_id, a.client_ip,
               a.detail::text AS detail
        FROM audit_log_orgs o JOIN audit_log a USING (audit_id)
        WHERE o.org_id = $1 AND ($2::bigint IS NULL OR o.audit_id < $2)
        ORDER BY o.audit_id DESC
        LIMIT $3
        """,
        org_id,
        before,
        limit,
    )
    return [
        StoredEntry(
            row["audit_id"],
            row["at"],
            row["action"],
            row["user_id"],
            row["session_id"],
            row["client_ip"],
            json.loads(row["detail"]),
        )
        for row in rows
    ]
