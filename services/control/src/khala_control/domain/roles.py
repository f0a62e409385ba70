"""Org roles and the rules for changing memberships.

Owners manage everyone; admins manage admins, members and viewers but can
neither grant the owner role nor change an owner; members and viewers manage
nobody, though anyone may leave an org. An org always keeps at least one owner.
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
