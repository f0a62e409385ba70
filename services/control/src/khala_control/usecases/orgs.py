"""Orgs and memberships: creation, invitations, role changes and removal under
the role rules (`domain/roles.py`), member lists and the org's audit log.

Nobody becomes a member silently: an owner or admin invites (a user id or an
email address, with a role the inviter may grant), and only the invitee's
accept creates the membership (`domain/invitations.py`). Invitations expire
after `INVITATION_TTL_S`; invite, accept and decline are audited in their
transaction, under the org.

Membership changes lock the org row first, so concurrent changes cannot both
pass the "keep at least one owner" check. Each change is audited in its own
transaction and evicts the user's cached memberships after commit (other
processes evict on the Postgres NOTIFY the write sends).

Removing a member publishes no revocation: their sessions stay valid (they
may belong to other orgs), their next sync token no longer covers the org,
and a sync token they already hold keeps working at the gateway until it
expires (at most `KHALA_SYNC_TOKEN_TTL_S`). Runtime sees the change within
its 2 s IntrospectSession cache.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from khala_control.domain.errors import ControlError
from khala_control.domain.invitations import (
    INVITATION_TTL_S,
    Invitation,
    InvitationStatus,
    check_open,
    is_invitee,
    not_found,
)
from khala_control.domain.models import Member, Membership, Principal, StoredEntry, User
from khala_control.domain.roles import (
    Role,
    check_audit_reader,
    check_member_change,
    check_member_reader,
)
from khala_control.domain.validation import (
    MAX_NAME,
    check_email,
    check_length,
    check_org_id,
    storable,
)
from khala_control.metrics import DENIALS
from khala_control.storage import audit, users
from khala_control.storage import invitations as invites
from khala_control.storage import orgs as store
from khala_control.storage.audit import AuditEntry
from khala_control.usecases.audit_writer import AuditWriter
from khala_control.usecases.caches import MembershipCache

MAX_AUDIT_PAGE = 500


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first; `next_before` is the cursor of the next page (None: last)."""

    entries: list[StoredEntry]
    next_before: int | None


class OrgService:
    """Org administration, member lists, the org audit log and the caller's profile."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        memberships: MembershipCache,
        audit_writer: AuditWriter,
        *,
        clock: Callable[[], float] = time.time,
        invitation_ttl_s: int = INVITATION_TTL_S,
    ) -> None:
        self._pool = pool
        self._memberships = memberships
        self._audit = audit_writer
        self._clock = clock
        self._invitation_ttl = timedelta(seconds=invitation_ttl_s)

    async def create(self, principal: Principal, org_id: str, name: str) -> Membership:
        """Create an org with the caller as its owner (`org_exists` if taken)."""
        org_id = check_org_id(org_id)
        name = check_length("name", name, MAX_NAME, required=True)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.insert_org(conn, org_id, name, principal.user_id):
                raise ControlError("org_exists", f"org {org_id!r} already exists")
            await store.put_membership(conn, org_id, principal.user_id, Role.OWNER)
            await audit.record(conn, self._entry("org.created", principal, org_id, {"name": name}))
        self._memberships.invalidate(principal.user_id)
        return Membership(org_id, name, Role.OWNER)

    async def set_member(
        self, principal: Principal, org_id: str, user_id: str, role: Role
    ) -> Membership:
        """Change a member's role (a user who is no member yet is invited instead:
        409 `not_a_member`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_org(conn, org_id)
            if not storable(user_id) or await users.get_user(conn, user_id) is None:
                raise ControlError("user_not_found", f"no user {user_id!r}")
            current = await store.role_of(conn, org_id, user_id)
            await self._check(
                principal,
                org_id,
                user_id,
                actor=await store.role_of(conn, org_id, principal.user_id),
                current=current,
                new=role,
                owner_count=await store.owner_count(conn, org_id),
            )
            if current is None:
                raise ControlError(
                    "not_a_member",
                    f"{user_id!r} is not a member of {org_id!r}: invite them "
                    f"(POST /api/orgs/{org_id}/invitations)",
                )
            await store.put_membership(conn, org_id, user_id, role)
            detail = {"member": user_id, "role": role.value, "previous": current}
            await audit.record(conn, self._entry("membership.set", principal, org_id, detail))
            memberships = await store.memberships_of(conn, user_id)
        self._memberships.invalidate(user_id)
        return next(m for m in memberships if m.org_id == org_id)

    async def remove_member(self, principal: Principal, org_id: str, user_id: str) -> None:
        """Remove a user from the org (anyone may leave; the last owner may not)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_org(conn, org_id)
            current = await store.role_of(conn, org_id, user_id) if storable(user_id) else None
            await self._check(
                principal,
                org_id,
                user_id,
                actor=await store.role_of(conn, org_id, principal.user_id),
                current=current,
                new=None,
                owner_count=await store.owner_count(conn, org_id),
            )
            if current is None:
                raise ControlError("member_not_found", f"{user_id!r} is not a member of {org_id!r}")
            await store.delete_membership(conn, org_id, user_id)
            detail = {"member": user_id, "role": current.value}
            await audit.record(conn, self._entry("membership.removed", principal, org_id, detail))
        self._memberships.invalidate(user_id)

    async def invite(
        self,
        principal: Principal,
        org_id: str,
        role: Role,
        *,
        user_id: str | None = None,
        email: str | None = None,
    ) -> Invitation:
        """Invite a user (by id) or an email address to the org with `role`: a
        pending invitation, under the same rules as granting that role."""
        if (user_id is None) == (email is None):
            raise ControlError("bad_request", "invite exactly one of user_id or email")
        email = check_email(email).lower() if email is not None else None
        now = self._now()
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_org(conn, org_id)
            current = None
            if user_id is not None:
                if not storable(user_id) or await users.get_user(conn, user_id) is None:
                    raise ControlError("user_not_found", f"no user {user_id!r}")
                current = await store.role_of(conn, org_id, user_id)
            await self._check(
                principal,
                org_id,
                user_id or "",
                actor=await store.role_of(conn, org_id, principal.user_id),
                current=current,
                new=role,
                owner_count=await store.owner_count(conn, org_id),
            )
            if current is not None:
                raise ControlError("already_member", f"{user_id!r} is a member of {org_id!r}")
            invitation = await invites.insert(
                conn,
                invitation_id=f"inv_{secrets.token_hex(16)}",
                org_id=org_id,
                role=role,
                user_id=user_id,
                email=email,
                invited_by=principal.user_id,
                created_at=now,
                expires_at=now + self._invitation_ttl,
            )
            detail = {
                "invitation_id": invitation.invitation_id,
                "role": role.value,
                "invitee_user_id": user_id,
                "invitee_email": email,
            }
            await audit.record(conn, self._entry("invitation.created", principal, org_id, detail))
        return invitation

    async def invitations_for(self, principal: Principal) -> list[Invitation]:
        """The caller's open invitations (to their user id or their email)."""
        async with self._pool.acquire() as conn:
            user = await users.get_user(conn, principal.user_id)
            email = user.email if user else ""
            return await invites.pending_for(conn, principal.user_id, email, self._now())

    async def org_invitations(self, principal: Principal, org_id: str) -> list[Invitation]:
        """The org's open invitations (owners and admins)."""
        async with self._pool.acquire() as conn:
            await self._check_org(conn, org_id)
            check_audit_reader(await store.role_of(conn, org_id, principal.user_id))
            return await invites.pending_of_org(conn, org_id, self._now())

    async def accept(self, principal: Principal, invitation_id: str) -> Membership:
        """Accept an invitation of the caller's: the membership is created now."""
        return await self._decide(principal, invitation_id, InvitationStatus.ACCEPTED)

    async def decline(self, principal: Principal, invitation_id: str) -> Invitation:
        """Decline an invitation of the caller's (nothing else changes)."""
        async with self._pool.acquire() as conn, conn.transaction():
            invitation = await self._own_invitation(conn, principal, invitation_id)
            await invites.decide(conn, invitation_id, InvitationStatus.DECLINED, self._now())
            await audit.record(
                conn,
                self._entry(
                    "invitation.declined",
                    principal,
                    invitation.org_id,
                    {"invitation_id": invitation_id, "role": invitation.role.value},
                ),
            )
        return invitation

    async def _decide(
        self, principal: Principal, invitation_id: str, status: InvitationStatus
    ) -> Membership:
        async with self._pool.acquire() as conn, conn.transaction():
            invitation = await self._own_invitation(conn, principal, invitation_id)
            org_id = invitation.org_id
            await self._lock_org(conn, org_id)
            if await store.role_of(conn, org_id, principal.user_id) is not None:
                raise ControlError("already_member", f"you are a member of {org_id!r}")
            await invites.decide(conn, invitation_id, status, self._now())
            await store.put_membership(conn, org_id, principal.user_id, invitation.role)
            detail = {
                "invitation_id": invitation_id,
                "member": principal.user_id,
                "role": invitation.role.value,
                "invited_by": invitation.invited_by,
            }
            await audit.record(conn, self._entry("invitation.accepted", principal, org_id, detail))
        self._memberships.invalidate(principal.user_id)
        return Membership(org_id, invitation.org_name, invitation.role)

    async def _own_invitation(
        self, conn: asyncpg.Connection, principal: Principal, invitation_id: str
    ) -> Invitation:
        """The caller's open invitation, row-locked; `invitation_not_found` for an
        unknown id and for someone else's invitation alike."""
        invitation = (
            await invites.get(conn, invitation_id, lock=True) if storable(invitation_id) else None
        )
        user = await users.get_user(conn, principal.user_id)
        if invitation is None or not is_invitee(
            invitation, principal.user_id, user.email if user else ""
        ):
            raise not_found(invitation_id)
        check_open(invitation, self._now())
        return invitation

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def members(self, principal: Principal, org_id: str) -> list[Member]:
        """The org's members (any member may list them)."""
        async with self._pool.acquire() as conn:
            await self._check_org(conn, org_id)
            check_member_reader(await store.role_of(conn, org_id, principal.user_id))
            return await store.members_of(conn, org_id)

    async def audit_page(
        self, principal: Principal, org_id: str, *, before: int | None, limit: int
    ) -> AuditPage:
        """One page of the org's audit log, newest first (owners and admins only)."""
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ControlError("bad_request", f"limit must be between 1 and {MAX_AUDIT_PAGE}")
        async with self._pool.acquire() as conn:
            await self._check_org(conn, org_id)
            try:
                check_audit_reader(await store.role_of(conn, org_id, principal.user_id))
            except ControlError as exc:
                await self._denied("audit.denied", principal, org_id, exc, {})
                raise
            entries = await audit.page_for_org(conn, org_id, before=before, limit=limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        return AuditPage(entries, entries[-1].audit_id if more else None)

    async def profile(self, principal: Principal) -> tuple[User, list[Membership]]:
        """The caller and their memberships."""
        async with self._pool.acquire() as conn:
            user = await users.get_user(conn, principal.user_id)
            memberships = await store.memberships_of(conn, principal.user_id)
        if user is None:
            raise ControlError("unauthorized", "user no longer exists")
        return user, memberships

    async def _check(
        self,
        principal: Principal,
        org_id: str,
        user_id: str,
        *,
        actor: Role | None,
        current: Role | None,
        new: Role | None,
        owner_count: int,
    ) -> None:
        try:
            check_member_change(
                actor=actor,
                is_self=user_id == principal.user_id,
                current=current,
                new=new,
                owner_count=owner_count,
            )
        except ControlError as exc:
            detail = {"member": user_id, "role": new.value if new else None}
            await self._denied("membership.denied", principal, org_id, exc, detail)
            raise

    async def _denied(
        self,
        action: str,
        principal: Principal,
        org_id: str,
        exc: ControlError,
        detail: dict[str, Any],
    ) -> None:
        DENIALS.labels(code=exc.code).inc()
        await self._audit.submit(
            self._entry(action, principal, org_id, {"code": exc.code, **detail})
        )

    def _entry(
        self, action: str, principal: Principal, org_id: str, detail: dict[str, Any]
    ) -> AuditEntry:
        return AuditEntry(
            action,
            datetime.fromtimestamp(self._clock(), UTC),
            user_id=principal.user_id,
            session_id=principal.session_id,
            org_ids=(org_id,),
            detail=detail,
        )

    @staticmethod
    async def _lock_org(conn: asyncpg.Connection, org_id: str) -> None:
        if not storable(org_id) or not await store.lock_org(conn, org_id):
            raise ControlError("org_not_found", f"no org {org_id!r}")

    @staticmethod
    async def _check_org(conn: asyncpg.Connection, org_id: str) -> None:
        if not storable(org_id) or not await store.org_exists(conn, org_id):
            raise ControlError("org_not_found", f"no org {org_id!r}")
