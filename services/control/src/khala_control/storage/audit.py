"""The audit log: append-only records of security-relevant actions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg


async def record(
    conn: asyncpg.Connection,
    action: str,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    org_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit entry (in the caller's transaction, if any)."""
    await conn.execute(
        """
        INSERT INTO audit_log (action, user_id, session_id, org_id, detail)
        VALUES ($1, $2, $3, $4, $5::jsonb)
        """,
        action,
        user_id,
        session_id,
        org_id,
        json.dumps(dict(detail or {}), sort_keys=True),
    )
