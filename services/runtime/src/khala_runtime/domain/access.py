"""Authorization by org role: viewers read; members, admins and owners write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from khala_runtime.domain.errors import DomainError


class Role(IntEnum):
    """Org roles, numbered as openagents.control.v1.Role."""

    VIEWER = 1
    MEMBER = 2
    ADMIN = 3
    OWNER = 4


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user, their session and org roles."""

    user_id: str
    session_id: str
    roles: Mapping[str, Role] = field(default_factory=dict)


def require_access(principal: Principal, org_id: str, *, write: bool) -> None:
    """Raise `forbidden` unless `principal` may read (or write) in `org_id`."""
    role = principal.roles.get(org_id)
    needed = Role.MEMBER if write else Role.VIEWER
    if role is None or role < needed:
        action = "write to" if write else "read"
        raise DomainError("forbidden", f"not allowed to {action} org {org_id!r}")
