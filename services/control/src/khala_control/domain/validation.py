"""Shape rules for identifiers and profile fields accepted from clients."""

from __future__ import annotations

import re

from khala_common.topics import SEGMENT_RULE, is_valid_segment
from khala_control.domain.errors import ControlError

EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,190}$"
_EMAIL = re.compile(EMAIL_PATTERN)
MAX_DEVICE_ID = 128
MAX_NAME = 200
MAX_CLIENT_VERSION = 64


def check_org_id(org_id: str) -> str:
    """An org id must be one topic segment: `[A-Za-z0-9_-]{1,64}`."""
    if not is_valid_segment(org_id):
        raise ControlError("bad_request", f"org_id must match {SEGMENT_RULE}")
    return org_id


def check_email(email: str) -> str:
    """A plausible email address (normalised: trimmed)."""
    email = email.strip()
    if not _EMAIL.fullmatch(email):
        raise ControlError("bad_request", "email must be an address like ada@example.com")
    return email


def storable(value: str) -> bool:
    """Whether Postgres text can hold `value` (it cannot hold NUL characters)."""
    return "\x00" not in value


def check_length(field: str, value: str, maximum: int, *, required: bool) -> str:
    """`value` trimmed, non-empty when required, at most `maximum` characters, storable."""
    value = value.strip()
    if not storable(value):
        raise ControlError("bad_request", f"{field} must not contain NUL characters")
    if required and not value:
        raise ControlError("bad_request", f"{field} is required")
    if len(value) > maximum:
        raise ControlError("bad_request", f"{field} must be at most {maximum} characters")
    return value
