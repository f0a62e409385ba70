"""Orgs and memberships.

Every membership write notifies `MEMBERSHIP_CHANNEL` with the user id, in the
writer's transaction (delivered at commit), so control processes can evict
their cached memberships of that user (`usecases/caches.py`).
"""

from __future__ import annotations

import asyncpg

from khala_control.domain.models import Member, Membership
from khala_control.domain.roles import Role

MEMBERSHIP_CHANNEL = "khala_control_memberships"


async def _notify(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", MEMBERSHIP_CHANNEL, user_id)


async def insert_org(conn: asyncpg.Connection, org_id: str, name: str, created_by: str) -> bool:
    """Create an org; False if the id is taken."""
    status = await conn.execute(
        """
        INSERT INTO orgs (org_id, name, created_by) VALUES ($1, $2, $3)
        ON CONFLICT (org_id) DO NOTHING
        """,
        org_id,
        name,
        created_by,
    )
    return bool(status.endswith(" 1"))


async def lock_org(conn: asyncpg.Connection, org_id: str) -> bool:
    """Row-lock the org (serialises membership changes); False if it does not exist."""
    row = await conn.fetchrow("SELECT 1 FROM orgs WHERE org_id = $1 FOR UPDATE", org_id)
    return row is not None


async def role_of(conn: asyncpg.Connection, org_id: str, user_id: str) -> Role | None:
    """The user's role in the org, or None."""
    role = await conn.fetchval(
        "SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2", org_id, user_id
    )
    return Role(role) if role else None


async def owner_count(conn: asyncpg.Connection, org_id: str) -> int:
    """How many owners the org has."""
    count = await conn.fetchval(
        "SELECT count(*) FROM memberships WHERE org_id = $1 AND role = 'owner'", org_id
    )
    return int(count)


async def put_membership(conn: asyncpg.Connection, org_id: str, user_id: str, role: Role) -> None:
    """Add the user to the org with `role`, or change their role."""
    await conn.execute(
        """
        INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)
        ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()
        """,
        org_id,
        user_id,
        role.value,
    )
    await _notify(conn, user_id)


async def delete_membership(conn: asyncpg.Connection, org_id: str, user_id: str) -> bool:
    """Remove the user from the org; False if they were not a member."""
    status = await conn.execute(
        "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2", org_id, user_id
    )
    await _notify(conn, user_id)
    return bool(status.endswith(" 1"))


async def memberships_of(conn: asyncpg.Connection, user_id: str) -> list[Membership]:
    """The user's memberships, by org id."""
    rows = await conn.fetch(
        """
        SELECT m.org_id, o.name, m.role FROM memberships m JOIN orgs o USING (org_id)
        WHERE m.user_id = $1 ORDER BY m.org_id
        """,
        user_id,
    )
    return [Membership(row["org_id"], row["name"], Role(row["role"])) for row in rows]


async def org_exists(conn: asyncpg.Connection, org_id: str) -> bool:
    """Whether the org exists."""
    return bool(await conn.fetchval("SELECT 1 FROM orgs WHERE org_id = $1", org_id))


async def members_of(conn: asyncpg.Connection, org_id: str) -> list[Member]:
    """The org's members, strongest role first, then by user id."""
    rows = await conn.fetch(
        """
        SELECT m.user_id, u.email, u.name, m.role FROM memberships m JOIN users u USING (user_id)
        WHERE m.org_id = $1
        ORDER BY array_position(ARRAY['owner', 'admin', 'member', 'viewer'], m.role), m.user_id
        """,
        org_id,
    )
    return [Member(row["user_id"], row["email"], row["name"], Role(row["role"])) for row in rows]
