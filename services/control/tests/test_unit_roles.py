"""Membership role rules (no I/O)."""

from __future__ import annotations

import pytest

from khala_control.domain.errors import ControlError
from khala_control.domain.roles import (
    Role,
    check_audit_reader,
    check_member_change,
    check_member_reader,
    parse_role,
)

OWN, A, M, V = Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER


def refused(**kwargs: object) -> str:
    with pytest.raises(ControlError) as caught:
        check_member_change(**kwargs)  # type: ignore[arg-type]
    return caught.value.code


def test_owner_manages_everyone() -> None:
    for current in (None, OWN, A, M, V):
        for new in (OWN, A, M, V, None):
            if current is OWN and new is not OWN:
                continue
            check_member_change(actor=OWN, is_self=False, current=current, new=new, owner_count=1)
    check_member_change(actor=OWN, is_self=False, current=OWN, new=None, owner_count=2)


def test_admin_manages_non_owners_only() -> None:
    check_member_change(actor=A, is_self=False, current=None, new=A, owner_count=1)
    check_member_change(actor=A, is_self=False, current=M, new=V, owner_count=1)
    check_member_change(actor=A, is_self=False, current=V, new=None, owner_count=1)
    assert refused(actor=A, is_self=False, current=M, new=OWN, owner_count=1) == "forbidden"
    assert refused(actor=A, is_self=False, current=OWN, new=M, owner_count=2) == "forbidden"
    assert refused(actor=A, is_self=False, current=OWN, new=None, owner_count=2) == "forbidden"


@pytest.mark.parametrize("actor", [M, V, None])
def test_members_viewers_and_outsiders_manage_nobody(actor: Role | None) -> None:
    assert refused(actor=actor, is_self=False, current=None, new=V, owner_count=1) == "forbidden"
    assert refused(actor=actor, is_self=False, current=V, new=None, owner_count=1) == "forbidden"
    assert refused(actor=actor, is_self=True, current=actor, new=OWN, owner_count=1) == "forbidden"


@pytest.mark.parametrize("role", [A, M, V])
def test_anyone_may_leave(role: Role) -> None:
    check_member_change(actor=role, is_self=True, current=role, new=None, owner_count=1)


def test_last_owner_is_kept() -> None:
    assert refused(actor=OWN, is_self=True, current=OWN, new=None, owner_count=1) == "last_owner"
    assert refused(actor=OWN, is_self=True, current=OWN, new=A, owner_count=1) == "last_owner"
    check_member_change(actor=OWN, is_self=True, current=OWN, new=None, owner_count=2)
    check_member_change(actor=OWN, is_self=True, current=OWN, new=OWN, owner_count=1)


def test_parse_role() -> None:
    assert parse_role("admin") is A
    for bad in ("Admin", "", None, 3, "superuser"):
        with pytest.raises(ControlError) as caught:
            parse_role(bad)
        assert caught.value.code == "bad_request"


@pytest.mark.parametrize(
    ("role", "reads_audit"),
    [
        (Role.OWNER, True),
        (Role.ADMIN, True),
        (Role.MEMBER, False),
        (Role.VIEWER, False),
        (None, False),
    ],
)
def test_audit_and_member_list_readers(role: Role | None, reads_audit: bool) -> None:
    if reads_audit:
        check_audit_reader(role)
    else:
        with pytest.raises(ControlError) as caught:
            check_audit_reader(role)
        assert caught.value.code == "forbidden"
    if role is None:
        with pytest.raises(ControlError):
            check_member_reader(role)
    else:
        check_member_reader(role)
