"""Shape rules for identifiers and profile fields accepted from clients."""

from __future__ import annotations

import re

from khala_control.domain.errors import ControlError

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
MAX_DEVICE_ID = 128
MAX_NAME = 200
MAX_CLIENT_VERSION = 64


def check_org_id(org_id: str) -> str:
    """An org id must be one topic segment: `[A-Za-z0-9_-]{1,64}`."""
    if not _SEGMENT.match(org_id):
        raise ControlError("bad_request", "org_id must match [A-Za-z0-9_-]{1,64}")
    return org_id


def check_email(email: str) -> str:
    """A plausible email address (normalised: trimmed)."""
    email = email.strip()
    if not _EMAIL.match(email):
        raise ControlError("bad_request", "email must be an address like ada@example.com")
    return email


def check_length(field: str, value: str, maximum: int, *, required: bool) -> str:
    """`value` trimmed, non-empty when required, and at most `maximum` characters."""
    value = value.strip()
    if required and not value:
        raise ControlError("bad_request", f"{field} is required")
    if len(value) > maximum:
        raise ControlError("bad_request", f"{field} must be at most {maximum} characters")
    return value
