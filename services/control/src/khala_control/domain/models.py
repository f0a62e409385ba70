"""Control's domain records (what storage returns and use cases pass around)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from khala_control.domain.roles import Role


@dataclass(frozen=True)
class User:
    """A person known through an identity provider (`issuer`, `subject`)."""

    user_id: str
    issuer: str
    subject: str
    email: str
    name: str


@dataclass(frozen=True)
class DeviceSession:
    """One signed-in device; revoked sessions stay as history."""

    session_id: str
    user_id: str
    device_id: str
    surface: str
    client_version: str
    created_at: datetime
    last_used_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Membership:
    """A user's role in one org."""

    org_id: str
    org_name: str
    role: Role


@dataclass(frozen=True)
class Principal:
    """The caller behind a verified access token whose session is live."""

    user_id: str
    session_id: str
    device_id: str
    surface: str


@dataclass(frozen=True)
class StoredEntry:
    """An audit entry as read back."""

    audit_id: int
    at: datetime
    action: str
    user_id: str | None
    session_id: str | None
    client_ip: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Member:
    """One member of an org, with their profile."""

    user_id: str
    email: str
    name: str
    role: Role
