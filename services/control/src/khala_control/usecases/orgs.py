"""Orgs and memberships: creation, role changes and removal under the role rules.

Membership changes lock the org row first, so concurrent changes cannot both
pass the "keep at least one owner" check.
"""

from __future__ import annotations

import asyncpg

from khala_control.domain.errors import ControlError
from khala_control.domain.models import Membership, Principal, User
from khala_control.domain.roles import Role, check_member_change
from khala_control.domain.validation import MAX_NAME, check_length, check_org_id
from khala_control.storage import audit, users
from khala_control.storage import orgs as store


class OrgService:
    """Org administration and the caller's profile."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, principal: Principal, org_id: str, name: str) -> Membership:
        """Create an org with the caller as its owner (`org_exists` if taken)."""
        org_id = check_org_id(org_id)
        name = check_length("name", name, MAX_NAME, required=True)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.insert_org(conn, org_id, name, principal.user_id):
                raise ControlError("org_exists", f"org {org_id!r} already exists")
            await store.put_membership(conn, org_id, principal.user_id, Role.OWNER)
            await audit.record(
                conn, "org.created", user_id=principal.user_id, org_id=org_id, detail={"name": name}
            )
        return Membership(org_id, name, Role.OWNER)

    async def set_member(
        self, principal: Principal, org_id: str, user_id: str, role: Role
    ) -> Membership:
        """Add a user to the org or change their role."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_org(conn, org_id)
            if await users.get_user(conn, user_id) is None:
                raise ControlError("user_not_found", f"no user {user_id!r}")
            current = await store.role_of(conn, org_id, user_id)
            check_member_change(
                actor=await store.role_of(conn, org_id, principal.user_id),
                is_self=user_id == principal.user_id,
                current=current,
                new=role,
                owner_count=await store.owner_count(conn, org_id),
            )
            await store.put_membership(conn, org_id, user_id, role)
            await audit.record(
                conn,
                "membership.set",
                user_id=principal.user_id,
                org_id=org_id,
                detail={"member": user_id, "role": role.value, "previous": current},
            )
            memberships = await store.memberships_of(conn, user_id)
        return next(m for m in memberships if m.org_id == org_id)

    async def remove_member(self, principal: Principal, org_id: str, user_id: str) -> None:
        """Remove a user from the org (anyone may leave; the last owner may not)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_org(conn, org_id)
            current = await store.role_of(conn, org_id, user_id)
            check_member_change(
                actor=await store.role_of(conn, org_id, principal.user_id),
                is_self=user_id == principal.user_id,
                current=current,
                new=None,
                owner_count=await store.owner_count(conn, org_id),
            )
            if current is None:
                raise ControlError("member_not_found", f"{user_id!r} is not a member of {org_id!r}")
            await store.delete_membership(conn, org_id, user_id)
            await audit.record(
                conn,
                "membership.removed",
                user_id=principal.user_id,
                org_id=org_id,
                detail={"member": user_id, "role": current.value},
            )

    async def profile(self, principal: Principal) -> tuple[User, list[Membership]]:
        """The caller and their memberships."""
        async with self._pool.acquire() as conn:
            user = await users.get_user(conn, principal.user_id)
            memberships = await store.memberships_of(conn, principal.user_id)
        if user is None:
            raise ControlError("unauthorized", "user no longer exists")
        return user, memberships

    @staticmethod
    async def _lock_org(conn: asyncpg.Connection, org_id: str) -> None:
        if not await store.lock_org(conn, org_id):
            raise ControlError("org_not_found", f"no org {org_id!r}")
