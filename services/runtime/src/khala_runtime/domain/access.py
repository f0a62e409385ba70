"""Authorization: what the caller's client surface may do, then their org role.

Surface matrix (the design's read matrix, extended to writes), checked first and
independent of any run or worker, so it reveals nothing about ids:

| surface | reads | writes |
|---|---|---|
| web | runs, workers | create, append, heartbeat, stop/resume |
| desktop | runs, workers, run events | create, append, heartbeat, stop/resume |
| ios | runs, workers, run events | stop/resume workers |
| onyx | runs | nothing |

web, desktop and ios may also read the org audit (`GET /api/v1/audit`).

Roles: viewers read; members, admins and owners write and stop/resume; only
admins and owners read the org audit.

A run or worker in an org the caller cannot even read answers exactly like an
unknown id (`subject_guard`), so ids cannot be probed across orgs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from khala_runtime.domain.errors import DomainError


class Role(IntEnum):
    """Org roles, numbered as openagents.control.v1.Role."""

    VIEWER = 1
    MEMBER = 2
    ADMIN = 3
    OWNER = 4


class Action(Enum):
    """What a request does, as the surface matrix and roles see it."""

    READ_RUNS = "read runs"
    READ_WORKERS = "read workers"
    READ_RUN_EVENTS = "read run events"
    READ_WORKER_EVENTS = "read worker events"
    WRITE = "create runs and workers or append events"
    STOP = "stop or resume workers"
    READ_AUDIT = "read the audit of runtime actions"


_READS = frozenset({Action.READ_RUNS, Action.READ_WORKERS})
SURFACE_ACTIONS: Mapping[str, frozenset[Action]] = {
    "web": _READS | {Action.WRITE, Action.STOP, Action.READ_AUDIT},
    "desktop": _READS
    | {
        Action.READ_RUN_EVENTS,
        Action.READ_WORKER_EVENTS,
        Action.WRITE,
        Action.STOP,
        Action.READ_AUDIT,
    },
    "ios": _READS
    | {Action.READ_RUN_EVENTS, Action.READ_WORKER_EVENTS, Action.STOP, Action.READ_AUDIT},
    "onyx": frozenset({Action.READ_RUNS}),
}
ROLE_NEEDED: Mapping[Action, Role] = {
    Action.READ_RUNS: Role.VIEWER,
    Action.READ_WORKERS: Role.VIEWER,
    Action.READ_RUN_EVENTS: Role.VIEWER,
    Action.READ_WORKER_EVENTS: Role.VIEWER,
    Action.WRITE: Role.MEMBER,
    Action.STOP: Role.MEMBER,
    Action.READ_AUDIT: Role.ADMIN,
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user, their session, client surface, org roles
    and device."""

    user_id: str
    session_id: str
    roles: Mapping[str, Role] = field(default_factory=dict)
    surface: str = ""
    device_id: str = ""


def require_surface(principal: Principal, action: Action) -> None:
    """Raise `forbidden_surface` unless the caller's surface may do `action` at all."""
    if action not in SURFACE_ACTIONS.get(principal.surface, frozenset()):
        raise DomainError(
            "forbidden_surface",
            f"a {principal.surface or 'surface-less'!r} client may not {action.value}",
        )


def require_access(principal: Principal, org_id: str, action: Action) -> None:
    """Raise unless `principal` may do `action` in `org_id` (surface, then role)."""
    require_surface(principal, action)
    role = principal.roles.get(org_id)
    if role is None or role < ROLE_NEEDED[action]:
        raise DomainError("forbidden", f"not allowed to {action.value} in org {org_id!r}")


def subject_guard(
    principal: Principal, action: Action, unknown: Callable[[], DomainError]
) -> Callable[[str], None]:
    """The check of one run or worker found in an org: `unknown()` when the caller is
    no member of it (the answer an id that does not exist gets), else `require_access`."""

    def authorize(org_id: str) -> None:
        if org_id not in principal.roles:
            raise unknown()
        require_access(principal, org_id, action)

    return authorize
