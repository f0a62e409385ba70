"""Invitations: how a user joins an org. An owner or admin invites a user (by user
id or email address) with a role; the invitee accepts (the membership is created
then, never before) or declines. An invitation is open while pending and not
expired; only its invitee may see, accept or decline it (anyone else gets the
same `invitation_not_found` as for an id that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from khala_control.domain.errors import ControlError
from khala_control.domain.roles import Role

INVITATION_TTL_S = 7 * 24 * 3600
"""How long an invitation stays open."""


class InvitationStatus(StrEnum):
    """Where an invitation stands (an expired one stays `pending` in storage)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"


@dataclass(frozen=True)
class Invitation:
    """An invitation to join `org_id` with `role`, for a user id or an email."""

    invitation_id: str
    org_id: str
    org_name: str
    role: Role
    user_id: str | None
    email: str | None
    invited_by: str
    status: InvitationStatus
    created_at: datetime
    expires_at: datetime


def is_invitee(invitation: Invitation, user_id: str, email: str) -> bool:
    """Whether the user (`user_id`, with the IdP's `email`) is the invitation's invitee."""
    if invitation.user_id is not None:
        return invitation.user_id == user_id
    return bool(email) and invitation.email == email.strip().lower()


def check_open(invitation: Invitation, now: datetime) -> None:
    """Refuse to decide an invitation that was decided already or has expired."""
    if invitation.status is not InvitationStatus.PENDING:
        raise ControlError(
            "invitation_closed", f"the invitation was {invitation.status.value} already"
        )
    if now >= invitation.expires_at:
        raise ControlError("invitation_expired", "the invitation has expired")


def not_found(invitation_id: str) -> ControlError:
    """The answer for an unknown invitation id and for another user's invitation."""
    return ControlError("invitation_not_found", f"no invitation {invitation_id!r}")
