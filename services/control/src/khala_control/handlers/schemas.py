"""Control's HTTP contract, declared once: the pydantic models the routes decode
their bodies and query through, and from which handlers/openapi.py generates
the published document. A rule JSON Schema can state (pattern, length, enum,
bounds, required) lives here; what it cannot (who may do what, state, a
client's version against its surface's minimum, rate limits) stays in domain/
and use cases and is documented as a response with its error codes.

Each rule is a field's `Must be ...` description too: decode.py words a
refusal with it (400 `bad_request`). Unknown body fields are ignored, as they
always were.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from khala_common.topics import MAX_TOPIC_BYTES, SEGMENT_RULE
from khala_control.domain.roles import Role
from khala_control.domain.scope import MAX_REQUESTED_TOPICS
from khala_control.domain.validation import (
    EMAIL_PATTERN,
    MAX_CLIENT_VERSION,
    MAX_DEVICE_ID,
    MAX_NAME,
)
from khala_control.usecases.orgs import MAX_AUDIT_PAGE

MAX_QUERY_DIGITS = 18  # any such number fits a Postgres bigint
DEFAULT_AUDIT_PAGE = 100
SEGMENT_PATTERN = f"^{SEGMENT_RULE}$"
# Python's str.strip() whitespace (str.isspace), spelled for JSON Schema too.
_SPACE = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL = r"^[^\u0000]*$"
SOME_TEXT = rf"[^{_SPACE}]"
NOT_BLANK = rf"^[^\u0000]*[^\u0000{_SPACE}][^\u0000]*$"
_SEGMENT = "[A-Za-z0-9_-]{1,64}"
TOPIC_PATTERN = rf"^org\.{_SEGMENT}\.(?:runs|workers|run\.{_SEGMENT}|worker\.{_SEGMENT})$"

# Strict: a string is a JSON string (no 5 for "5"); other fields are ignored.
_BODY = ConfigDict(strict=True, extra="ignore")
# Query values are strings: the integers are parsed (ASCII digits only).
_QUERY = ConfigDict(extra="ignore")


def _rule(rule: str, **constraints: Any) -> Any:
    """A field whose refusal message says `<name> must be <rule>`."""
    return Field(description=f"Must be {rule}.", **constraints)


def _ascii_digits(value: object) -> object:
    # int() also takes "²", "٣", " 5" and "5_0"; a query integer is ASCII digits only.
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("not ASCII digits")
    return value


Text = Annotated[str, _rule("a non-empty string", pattern=SOME_TEXT)]
Email = Annotated[str, _rule("an address like ada@example.com", pattern=EMAIL_PATTERN)]
SegmentId = Annotated[str, _rule(f"a string matching {SEGMENT_RULE}", pattern=SEGMENT_PATTERN)]
ClientVersion = Annotated[
    str | None,
    _rule(
        f"a string of at most {MAX_CLIENT_VERSION} characters without NUL",
        max_length=MAX_CLIENT_VERSION,
        pattern=NO_NUL,
    ),
]
_SURFACE_RULE = _rule("one of the deployment's surfaces (KHALA_SURFACE_MATRIX)", pattern=SOME_TEXT)
Surface = Annotated[str, _SURFACE_RULE]
OptionalSurface = Annotated[str | None, _SURFACE_RULE]
# The topic grammar is published here and checked by the scope rules (domain/scope.py),
# which answer `invalid_topic` naming the topic, not `bad_request`.
Topic = Annotated[
    str,
    Field(
        description="A Khala topic (`invalid_topic` otherwise).",
        json_schema_extra={"maxLength": MAX_TOPIC_BYTES, "pattern": TOPIC_PATTERN},
    ),
]
_DIGITS = BeforeValidator(_ascii_digits)


# --- requests ---------------------------------------------------------------


class IdTokenRequest(BaseModel):
    """POST /api/dev/id-token."""

    model_config = _BODY
    email: Email
    name: Annotated[
        str | None,
        _rule(
            f"a string of at most {MAX_NAME} characters without NUL",
            max_length=MAX_NAME,
            pattern=NO_NUL,
        ),
    ] = None


class SignInRequest(BaseModel):
    """POST /api/auth/session."""

    model_config = _BODY
    id_token: Text
    device_id: Annotated[
        str,
        _rule(
            f"a non-empty string of at most {MAX_DEVICE_ID} characters without NUL",
            max_length=MAX_DEVICE_ID,
            pattern=NOT_BLANK,
        ),
    ]
    surface: Surface
    client_version: ClientVersion = None


class RefreshRequest(BaseModel):
    """POST /api/auth/refresh."""

    model_config = _BODY
    refresh_token: Text


class CreateOrgRequest(BaseModel):
    """POST /api/orgs."""

    model_config = _BODY
    org_id: SegmentId
    name: Annotated[
        str,
        _rule(
            f"a non-empty string of at most {MAX_NAME} characters without NUL",
            max_length=MAX_NAME,
            pattern=NOT_BLANK,
        ),
    ]


class MemberRequest(BaseModel):
    """PUT /api/orgs/{org_id}/members/{user_id}."""

    model_config = _BODY
    role: Annotated[Role, _rule(f"one of {', '.join(role.value for role in Role)}", strict=False)]


class InvitationRequest(BaseModel):
    """POST /api/orgs/{org_id}/invitations: exactly one of `user_id` and `email`
    (400 `bad_request` otherwise)."""

    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        json_schema_extra={"oneOf": [{"required": ["user_id"]}, {"required": ["email"]}]},
    )
    role: Annotated[Role, _rule(f"one of {', '.join(role.value for role in Role)}", strict=False)]
    # Absent reads as None; a JSON null is refused (the schema says string).
    user_id: Annotated[str, _rule("a user id", pattern=SOME_TEXT)] = cast(str, None)
    email: Email = cast(str, None)


class SyncTokenRequest(BaseModel):
    """POST /api/sync/token."""

    model_config = _BODY
    topics: Annotated[
        list[Topic] | None,
        _rule(
            f"a list of at most {MAX_REQUESTED_TOPICS} topic strings",
            max_length=MAX_REQUESTED_TOPICS,
        ),
    ] = None
    surface: OptionalSurface = None
    client_version: ClientVersion = None


class AuditQuery(BaseModel):
    """GET /api/orgs/{org_id}/audit."""

    model_config = _QUERY
    limit: Annotated[
        int, _rule(f"an integer from 1 to {MAX_AUDIT_PAGE}", ge=1, le=MAX_AUDIT_PAGE), _DIGITS
    ] = DEFAULT_AUDIT_PAGE
    before: Annotated[
        int | None,
        _rule(
            "a non-negative integer (`next_before` of the last page)",
            ge=0,
            le=10**MAX_QUERY_DIGITS - 1,
        ),
        _DIGITS,
    ] = None


# --- responses --------------------------------------------------------------

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Status(BaseModel):
    """Liveness or readiness."""

    status: str
    problems: list[str] | None = None


class IdToken(BaseModel):
    """A signed ID token (10 min)."""

    id_token: str


class Discovery(BaseModel):
    """An OpenID discovery document (the fields control's clients read)."""

    issuer: str
    jwks_uri: str


class Jwk(BaseModel):
    """One public key."""

    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str
    y: str
    kid: str
    alg: Literal["ES256"]
    use: Literal["sig"]


class Jwks(BaseModel):
    """Public keys (active, next, previous)."""

    keys: list[Jwk]


class Issued(BaseModel):
    """Access and refresh tokens of a device session."""

    access_token: str
    refresh_token: Annotated[str, Field(pattern="^rt_")]
    session_id: str
    user_id: str
    expires_at: Time
    expires_at_ms: int
    token_type: Literal["Bearer"]


class LoggedOut(BaseModel):
    """The caller's session is revoked."""

    session_id: str
    revoked: Literal[True]


class DeviceSession(BaseModel):
    """One live device session of the caller."""

    session_id: str
    device_id: str
    surface: str
    client_version: str
    created_at: Time
    last_used_at: Time
    current: bool


class DeviceSessions(BaseModel):
    """The caller's live sessions."""

    sessions: list[DeviceSession]


class DeviceSignedOut(BaseModel):
    """A device's sessions are revoked (an empty list: they already were)."""

    session_id: str
    device_id: str
    revoked: Literal[True]
    revoked_session_ids: list[str]


class RevokedAll(BaseModel):
    """Every session of the caller is revoked."""

    revoked_session_ids: list[str]


class User(BaseModel):
    """A user's profile."""

    user_id: str
    email: str
    name: str


class SessionInfo(BaseModel):
    """The session a request came with."""

    session_id: str
    device_id: str
    surface: str


class Membership(BaseModel):
    """One org membership."""

    org_id: Annotated[str, Field(pattern=SEGMENT_PATTERN)]
    name: str
    role: Role


class MemberRole(Membership):
    """A membership now, with its user."""

    user_id: str


class Me(BaseModel):
    """The caller, their session and their memberships."""

    user: User
    session: SessionInfo
    memberships: list[Membership]


class Member(BaseModel):
    """One member of an org."""

    user_id: str
    email: str
    name: str
    role: Role


class Members(BaseModel):
    """An org's members, strongest role first."""

    org_id: str
    members: list[Member]


class Removed(BaseModel):
    """A membership is removed."""

    org_id: str
    user_id: str
    removed: Literal[True]


class AuditEntry(BaseModel):
    """One audit-log entry."""

    audit_id: int
    at: Time
    at_ms: int
    action: str
    user_id: str | None
    session_id: str | None
    client_ip: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """A page of an org's audit log, newest first."""

    org_id: str
    entries: list[AuditEntry]
    next_before: int | None


class Invitation(BaseModel):
    """An invitation to join an org (for a user id or an email address)."""

    invitation_id: Annotated[str, Field(pattern="^inv_")]
    org_id: Annotated[str, Field(pattern=SEGMENT_PATTERN)]
    org_name: str
    role: Role
    user_id: str | None
    email: str | None
    invited_by: str
    status: Literal["pending", "accepted", "declined"]
    created_at: Time
    created_at_ms: int
    expires_at: Time
    expires_at_ms: int


class Invitations(BaseModel):
    """The caller's open invitations, oldest first."""

    invitations: list[Invitation]


class OrgInvitations(BaseModel):
    """An org's open invitations, newest first."""

    org_id: str
    invitations: list[Invitation]


class SyncToken(BaseModel):
    """A sync token for the gateway."""

    token: str
    expires_at: Time
    expires_at_ms: int
    scope: list[str]
    kid: str
