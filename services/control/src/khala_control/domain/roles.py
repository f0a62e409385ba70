"""Org roles and what each may do.

| action                                   | owner | admin | member | viewer |
|------------------------------------------|-------|-------|--------|--------|
| read the org's topics (sync tokens)      | yes   | yes   | yes    | yes    |
| list the org's members                   | yes   | yes   | yes    | yes    |
| add / change / remove admins, members, viewers | yes | yes | no   | no     |
| grant the owner role, change or remove an owner | yes | no | no    | no     |
| read the org's audit log                 | yes   | yes   | no     | no     |
| leave the org (remove oneself)           | yes*  | yes   | yes    | yes    |

(*) An org always keeps at least one owner: the last owner can neither leave
nor be demoted (`last_owner`). Non-members can do none of the above.
"""

from __future__ import annotations

from enum import StrEnum

from khala_control.domain.errors import ControlError


class Role(StrEnum):
    """A member's role in an org, strongest first."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


def parse_role(raw: object) -> Role:
    """The role named by `raw`, or `bad_request`."""
    if isinstance(raw, str):
        try:
            return Role(raw)
        except ValueError:
            pass
    allowed = ", ".join(role.value for role in Role)
    raise ControlError("bad_request", f"role must be one of {allowed}")


def check_member_change(
    *,
    actor: Role | None,
    is_self: bool,
    current: Role | None,
    new: Role | None,
    owner_count: int,
) -> None:
    """Refuse a membership change the actor may not make.

    `current` is the target's role now (None: not a member); `new` is the role
    asked for (None: remove). Raises `forbidden` (403) or `last_owner` (409).
    """
    leaving = is_self and new is None
    if not leaving:
        if actor not in (Role.OWNER, Role.ADMIN):
            raise ControlError("forbidden", "only owners and admins manage members")
        if actor is Role.ADMIN and Role.OWNER in (current, new):
            raise ControlError("forbidden", "only owners grant, change or remove the owner role")
    if current is Role.OWNER and new is not Role.OWNER and owner_count <= 1:
        raise ControlError("last_owner", "an org must keep at least one owner")


def check_audit_reader(actor: Role | None) -> None:
    """Only owners and admins read an org's audit log (`forbidden` otherwise)."""
    if actor not in (Role.OWNER, Role.ADMIN):
        raise ControlError("forbidden", "only owners and admins read the audit log")


def check_member_reader(actor: Role | None) -> None:
    """Any member lists the org's members (`forbidden` for non-members)."""
    if actor is None:
        raise ControlError("forbidden", "only members list an org's members")
