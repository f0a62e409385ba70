"""The org audit of runtime actions (who wrote what on an org's runs and workers)."""

from __future__ import annotations

import asyncpg

from khala_runtime.domain.audit import AuditEntry, Position
from khala_runtime.storage import audit as audit_sql


class AuditLog:
    """Reads the audit of an org's runs and workers (the caller authorizes)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read(self, org_id: str, *, after: Position, limit: int) -> list[AuditEntry]:
        """Up to `limit` entries of `org_id` after the position `after`, oldest first."""
        return await audit_sql.read_audit(self._pool, org_id, after=after, limit=limit)
