"""SQL over `invitations` (migration 0004)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from khala_control.domain.invitations import Invitation, InvitationStatus
from khala_control.domain.roles import Role

_SELECT = (
    "SELECT i.invitation_id, i.org_id, o.name AS org_name, i.role, i.user_id, i.email, "
    "i.invited_by, i.status, i.created_at, i.expires_at "
    "FROM invitations i JOIN orgs o USING (org_id) "
)


def _invitation(row: Any) -> Invitation:
    return Invitation(
        invitation_id=row["invitation_id"],
        org_id=row["org_id"],
        org_name=row["org_name"],
        role=Role(row["role"]),
        user_id=row["user_id"],
        email=row["email"],
        invited_by=row["invited_by"],
        status=InvitationStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


async def insert(
    conn: asyncpg.Connection,
    *,
    invitation_id: str,
    org_id: str,
    role: Role,
    user_id: str | None,
    email: str | None,
    invited_by: str,
    created_at: datetime,
    expires_at: datetime,
) -> Invitation:
    """Record a pending invitation; the stored invitation."""
    await conn.execute(
        "INSERT INTO invitations (invitation_id, org_id, role, user_id, email, invited_by, "
        "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        invitation_id,
        org_id,
        role.value,
        user_id,
        email,
        invited_by,
        created_at,
        expires_at,
    )
    found = await get(conn, invitation_id)
    assert found is not None  # inserted in this transaction
    return found


async def get(
    conn: asyncpg.Connection, invitation_id: str, *, lock: bool = False
) -> Invitation | None:
    """One invitation (row-locked with `lock`), or None."""
    suffix = " FOR UPDATE OF i" if lock else ""
    row = await conn.fetchrow(_SELECT + "WHERE i.invitation_id = $1" + suffix, invitation_id)
    return _invitation(row) if row else None


async def pending_for(
    conn: asyncpg.Connection, user_id: str, email: str, now: datetime
) -> list[Invitation]:
    """The open invitations of a user (by id, or by their email), oldest first."""
    rows = await conn.fetch(
        _SELECT + "WHERE i.status = 'pending' AND i.expires_at > $3 "
        "AND (i.user_id = $1 OR (i.email = $2 AND $2 <> '')) "
        "ORDER BY i.created_at, i.invitation_id",
        user_id,
        email.strip().lower(),
        now,
    )
    return [_invitation(row) for row in rows]


async def pending_of_org(conn: asyncpg.Connection, org_id: str, now: datetime) -> list[Invitation]:
    """The org's open invitations, newest first."""
    rows = await conn.fetch(
        _SELECT + "WHERE i.org_id = $1 AND i.status = 'pending' AND i.expires_at > $2 "
        "ORDER BY i.created_at DESC, i.invitation_id",
        org_id,
        now,
    )
    return [_invitation(row) for row in rows]


async def decide(
    conn: asyncpg.Connection, invitation_id: str, status: InvitationStatus, now: datetime
) -> None:
    """Mark an invitation accepted or declined."""
    await conn.execute(
        "UPDATE invitations SET status = $2, decided_at = $3 WHERE invitation_id = $1",
        invitation_id,
        status.value,
        now,
    )
