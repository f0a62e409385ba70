"""JSON shapes of control's HTTP answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from khala_control.domain.invitations import Invitation
from khala_control.domain.models import DeviceSession, Member, Membership, Principal, StoredEntry
from khala_control.usecases.sessions import IssuedSession


def iso(value: datetime | int | None) -> str | None:
    """RFC 3339 UTC timestamp (`2025-01-02T03:04:05Z`) of a datetime or epoch seconds."""
    if value is None:
        return None
    moment = datetime.fromtimestamp(value, UTC) if isinstance(value, int) else value.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def issued(session: IssuedSession) -> dict[str, Any]:
    """Body of sign-in and refresh."""
    return {
        "access_token": session.access_token,
        "refresh_token": session.refresh_token,
        "session_id": session.session_id,
        "user_id": session.user_id,
        "expires_at": iso(session.expires_at),
        "expires_at_ms": session.expires_at * 1000,
        "token_type": "Bearer",
    }


def device_session(session: DeviceSession, caller: Principal) -> dict[str, Any]:
    """One entry of GET /api/auth/sessions."""
    return {
        "session_id": session.session_id,
        "device_id": session.device_id,
        "surface": session.surface,
        "client_version": session.client_version,
        "created_at": iso(session.created_at),
        "last_used_at": iso(session.last_used_at),
        "current": session.session_id == caller.session_id,
    }


def membership(item: Membership) -> dict[str, Any]:
    """One org membership."""
    return {"org_id": item.org_id, "name": item.org_name, "role": item.role.value}


def invitation(item: Invitation, status: str | None = None) -> dict[str, Any]:
    """One invitation (`status` overrides the stored one, for the answer of a decision)."""
    return {
        "invitation_id": item.invitation_id,
        "org_id": item.org_id,
        "org_name": item.org_name,
        "role": item.role.value,
        "user_id": item.user_id,
        "email": item.email,
        "invited_by": item.invited_by,
        "status": status or item.status.value,
        "created_at": iso(item.created_at),
        "created_at_ms": int(item.created_at.timestamp() * 1000),
        "expires_at": iso(item.expires_at),
        "expires_at_ms": int(item.expires_at.timestamp() * 1000),
    }


def member(item: Member) -> dict[str, Any]:
    """One entry of GET /api/orgs/{org}/members."""
    return {
        "user_id": item.user_id,
        "email": item.email,
        "name": item.name,
        "role": item.role.value,
    }


def audit_entry(entry: StoredEntry) -> dict[str, Any]:
    """One entry of GET /api/orgs/{org}/audit."""
    return {
        "audit_id": entry.audit_id,
        "at": iso(entry.at),
        "at_ms": int(entry.at.timestamp() * 1000),
        "action": entry.action,
        "user_id": entry.user_id,
        "session_id": entry.session_id,
        "client_ip": entry.client_ip,
        "detail": entry.detail,
    }
