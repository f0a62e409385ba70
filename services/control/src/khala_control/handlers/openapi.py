"""The OpenAPI 3.1 description of control's HTTP API, served without
authentication at `GET /openapi.json` (and its alias `GET /api/v1/openapi.json`).

Generated, not written: the bodies, query and answers are the pydantic models
the routes decode through (handlers/schemas.py); the operations and their
refusals are one table below. The surfaces a body may name are the
deployment's (KHALA_SURFACE_MATRIX), so the served document lists those.

Every operation control answers itself is described, with every status it can
answer and, per status, the exact error codes (`error.code` is an enum), so a
client can rely on the document and tests check the live service against it
with schemathesis. The dev identity provider's operations are left out of the
served document when the dev IdP is disabled (their routes do not exist then).

Not described (listed in `UNDESCRIBED`, which the route test honours):
* `/api/v1/{tail}`: the dashboard's proxy of runtime's API; runtime's own
  document describes those operations. Control's `/api/v1/openapi.json` is its
  own document, so that one path is not proxied (any other method on it is 405).
* `/dashboard`, `/dashboard/` and the static files under it (only with
  `KHALA_DASHBOARD_DIR`): HTML and assets, not an API.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from khala_common.json_schema import nullable_types
from khala_control.domain.surfaces import DEFAULT_MATRIX_SPEC, parse_matrix
from khala_control.handlers import schemas as s
from khala_control.handlers.errors import REALM
from khala_control.usecases.dev_idp import ISSUER_PATH

ALIAS = "/api/v1/openapi.json"
UNDESCRIBED = frozenset({"/api/v1/{tail}", "/dashboard", "/dashboard/"})
"""Canonical paths of routes the document leaves out on purpose (see above)."""
DEV_IDP_PATHS = frozenset(
    {
        "/api/dev/id-token",
        f"{ISSUER_PATH}/.well-known/openid-configuration",
        f"{ISSUER_PATH}/jwks.json",
    }
)
DEFAULT_SURFACES = frozenset(parse_matrix(DEFAULT_MATRIX_SPEC))
_REF = "#/components/schemas/{model}"
_STR = {"type": "string"}


def _header(pattern: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
    }


_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": _header(
            f'^Bearer realm="{REALM}"',
            'RFC 6750 challenge; adds error="invalid_token" when credentials were sent',
        )
    },
    429: {"Retry-After": _header("^[0-9]+$", "Whole seconds until a retry can succeed")},
}
# Fields a refusal carries besides code and message.
_EXTRAS: dict[str, dict[str, Any]] = {
    "invalid_topic": {"topic": _STR},
    "forbidden_topic": {"topic": _STR},
    "surface_mismatch": {"surface": _STR, "session_surface": _STR},
    "upgrade_required": {"surface": _STR, "minimum_version": _STR},
    "rate_limited": {"retry_after_s": {"type": "integer", "minimum": 1}},
}

Refusal = tuple[int, tuple[str, ...]]
_BAD: Refusal = (400, ("bad_request",))
_DENIED: Refusal = (401, ("unauthorized", "token_expired"))
_TOO_LARGE: Refusal = (413, ("payload_too_large",))
_RATE_LIMITED: Refusal = (429, ("rate_limited",))
_AUDIT: Refusal = (503, ("audit_unavailable",))
_FORBIDDEN: Refusal = (403, ("forbidden",))


@dataclass(frozen=True)
class Op:
    """One operation: its answer, its refusals (status, codes) and its models."""

    method: str
    path: str
    summary: str
    ok: type[BaseModel] | str
    refusals: tuple[Refusal, ...] = ()
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False
    also: tuple[int, ...] = ()
    """Other statuses answered with `ok` (a not-ready /readyz is a 503)."""


OPERATIONS: tuple[Op, ...] = (
    Op("get", "/healthz", "Liveness", s.Status, public=True),
    Op(
        "get",
        "/readyz",
        "Readiness (Postgres, broker, not draining)",
        s.Status,
        public=True,
        also=(503,),
    ),
    Op("get", "/metrics", "Prometheus metrics", "text/plain", public=True),
    Op("get", "/openapi.json", "This document", "document", public=True),
    Op("get", ALIAS, "Alias of /openapi.json", "document", public=True),
    Op(
        "get",
        "/.well-known/jwks.json",
        "Public keys (active, next, previous) verifying access and sync tokens",
        s.Jwks,
        public=True,
    ),
    Op(
        "post",
        "/api/dev/id-token",
        "Dev IdP: an ID token for any email (only with KHALA_DEV_IDP_ENABLED=true)",
        s.IdToken,
        (_BAD,),
        body=s.IdTokenRequest,
        public=True,
    ),
    Op(
        "get",
        f"{ISSUER_PATH}/.well-known/openid-configuration",
        "Dev IdP: OpenID discovery document",
        s.Discovery,
        public=True,
    ),
    Op("get", f"{ISSUER_PATH}/jwks.json", "Dev IdP: its public keys", s.Jwks, public=True),
    Op(
        "post",
        "/api/auth/session",
        "Exchange an ID token for a device session (creates the user on first sign-in)",
        s.Issued,
        (_BAD, _DENIED, _RATE_LIMITED, (503, ("idp_unavailable", "audit_unavailable"))),
        body=s.SignInRequest,
        public=True,
    ),
    Op(
        "post",
        "/api/auth/refresh",
        "Rotate a refresh token (a spent one revokes its session)",
        s.Issued,
        (_BAD, _DENIED, _RATE_LIMITED, _AUDIT),
        body=s.RefreshRequest,
        public=True,
    ),
    Op("post", "/api/auth/logout", "Revoke the caller's own session", s.LoggedOut, (_DENIED,)),
    Op(
        "get",
        "/api/auth/sessions",
        "The caller's live device sessions",
        s.DeviceSessions,
        (_DENIED,),
    ),
    Op(
        "delete",
        "/api/auth/sessions/{session_id}",
        "Sign out the device of one of the caller's sessions (idempotent)",
        s.DeviceSignedOut,
        (_DENIED, (404, ("session_not_found", "not_found"))),
    ),
    Op(
        "post",
        "/api/auth/sessions/revoke-all",
        "Revoke every session of the caller, this one included",
        s.RevokedAll,
        (_DENIED,),
    ),
    Op("get", "/api/me", "The caller, their session and their memberships", s.Me, (_DENIED,)),
    Op(
        "post",
        "/api/orgs",
        "Create an org; the caller becomes its owner",
        s.Membership,
        (_BAD, _DENIED, (409, ("org_exists",))),
        status=201,
        body=s.CreateOrgRequest,
    ),
    Op(
        "put",
        "/api/orgs/{org_id}/members/{user_id}",
        "Change a member's role (owners and admins; a non-member is invited instead)",
        s.MemberRole,
        (
            _BAD,
            _DENIED,
            _FORBIDDEN,
            (404, ("org_not_found", "user_not_found", "not_found")),
            (409, ("last_owner", "not_a_member")),
            _AUDIT,
        ),
        body=s.MemberRequest,
    ),
    Op(
        "post",
        "/api/orgs/{org_id}/invitations",
        "Invite a user id or an email address (owners and admins); pending until accepted",
        s.Invitation,
        (
            _BAD,
            _DENIED,
            _FORBIDDEN,
            (404, ("org_not_found", "user_not_found", "not_found")),
            (409, ("already_member",)),
            _AUDIT,
        ),
        status=201,
        body=s.InvitationRequest,
    ),
    Op(
        "get",
        "/api/orgs/{org_id}/invitations",
        "The org's open invitations, newest first (owners and admins)",
        s.OrgInvitations,
        (_DENIED, _FORBIDDEN, (404, ("org_not_found", "not_found"))),
    ),
    Op(
        "get",
        "/api/invitations",
        "The caller's open invitations (to their user id or email), oldest first",
        s.Invitations,
        (_DENIED,),
    ),
    Op(
        "post",
        "/api/invitations/{invitation_id}/accept",
        "Accept one of the caller's invitations: the membership starts now",
        s.MemberRole,
        (
            _DENIED,
            (404, ("invitation_not_found", "org_not_found", "not_found")),
            (409, ("invitation_closed", "already_member")),
            (410, ("invitation_expired",)),
        ),
    ),
    Op(
        "post",
        "/api/invitations/{invitation_id}/decline",
        "Decline one of the caller's invitations",
        s.Invitation,
        (
            _DENIED,
            (404, ("invitation_not_found", "not_found")),
            (409, ("invitation_closed",)),
            (410, ("invitation_expired",)),
        ),
    ),
    Op(
        "delete",
        "/api/orgs/{org_id}/members/{user_id}",
        "Remove a member (owners and admins; anyone may remove themselves)",
        s.Removed,
        (
            _DENIED,
            _FORBIDDEN,
            (404, ("org_not_found", "member_not_found", "not_found")),
            (409, ("last_owner",)),
            _AUDIT,
        ),
    ),
    Op(
        "get",
        "/api/orgs/{org_id}/members",
        "The org's members, strongest role first (any member)",
        s.Members,
        (_DENIED, _FORBIDDEN, (404, ("org_not_found", "not_found"))),
    ),
    Op(
        "get",
        "/api/orgs/{org_id}/audit",
        "One page of the org's audit log, newest first (owners and admins)",
        s.AuditPage,
        (_BAD, _DENIED, _FORBIDDEN, (404, ("org_not_found", "not_found")), _AUDIT),
        query=s.AuditQuery,
    ),
    Op(
        "post",
        "/api/sync/token",
        "Mint a sync token for the gateway (empty topics: all the surface may read)",
        s.SyncToken,
        (
            (400, ("bad_request", "invalid_topic")),
            _DENIED,
            (403, ("forbidden_topic", "surface_mismatch")),
            (426, ("upgrade_required",)),
            _RATE_LIMITED,
            _AUDIT,
        ),
        body=s.SyncTokenRequest,
    ),
)


def _refusal(status: int, *codes: str) -> dict[str, Any]:
    """A refusal with `status` whose `error.code` is one of `codes`."""
    required = set.intersection(*(set(_EXTRAS.get(code, {})) for code in codes))
    extras = {name: schema for code in codes for name, schema in _EXTRAS.get(code, {}).items()}
    error = {
        "type": "object",
        "required": ["code", "message", *sorted(required)],
        "properties": {"code": {"type": "string", "enum": list(codes)}, "message": _STR, **extras},
    }
    answer: dict[str, Any] = {
        "description": f"Refused: {', '.join(codes)}",
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["error"], "properties": {"error": error}}
            }
        },
    }
    if status in _HEADERS:
        answer["headers"] = _HEADERS[status]
    return answer


def _answer(op: Op) -> dict[str, Any]:
    if op.ok == "text/plain":
        return {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": _STR}},
        }
    if isinstance(op.ok, str):
        return {
            "description": "This OpenAPI document",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return {
        "description": (op.ok.__doc__ or "").strip(),
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=op.ok.__name__)}}},
    }


def _parameters(op: Op) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": s.SEGMENT_PATTERN},
        }
        for name in ("session_id", "org_id", "user_id", "invitation_id")
        if f"{{{name}}}" in op.path
    ]
    if op.query is not None:
        schema = nullable_types(op.query.model_json_schema(ref_template=_REF))
        for name, prop in schema["properties"].items():
            # A query value is a string or absent, never JSON null.
            prop = {k: v for k, v in prop.items() if k != "title"}
            if isinstance(prop.get("type"), list):
                prop["type"] = next(t for t in prop["type"] if t != "null")
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", ()),
                    "schema": prop,
                }
            )
    return params


def _operation(op: Op) -> dict[str, Any]:
    refusals = (*op.refusals, _TOO_LARGE) if op.body is not None else op.refusals
    operation: dict[str, Any] = {
        "summary": op.summary,
        "responses": {
            **{str(status): _answer(op) for status in (op.status, *op.also)},
            **{str(status): _refusal(status, *codes) for status, codes in refusals},
        },
    }
    if op.public:
        operation["security"] = []
    if params := _parameters(op):
        operation["parameters"] = params
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=op.body.__name__)}}
            },
        }
    return operation


def _schemas() -> dict[str, Any]:
    models: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {}
    for op in OPERATIONS:
        if op.body is not None:
            models[op.body.__name__] = (op.body, "validation")
        if not isinstance(op.ok, str):
            models[op.ok.__name__] = (op.ok, "serialization")
    _, top = models_json_schema(list(models.values()), ref_template=_REF)
    return {name: nullable_types(schema) for name, schema in top["$defs"].items()}


_PATHS: dict[str, Any] = {}
for _op in OPERATIONS:
    _PATHS.setdefault(_op.path, {})[_op.method] = _operation(_op)
_SCHEMAS = _schemas()


def document(*, dev_idp: bool, surfaces: Collection[str] = DEFAULT_SURFACES) -> dict[str, Any]:
    """The document of a deployment: its surfaces, and the dev IdP's operations only
    when it is enabled."""
    schemas = copy.deepcopy(_SCHEMAS)
    for body in (s.SignInRequest, s.SyncTokenRequest):
        surface = schemas[body.__name__]["properties"]["surface"]
        surface["enum"] = sorted(surfaces) + ([None] if "null" in surface["type"] else [])
    paths = {path: ops for path, ops in _PATHS.items() if dev_idp or path not in DEV_IDP_PATHS}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Khala control API",
            "version": "1",
            "description": "Identity, device sessions, orgs and sync tokens; error codes "
            'in docs/control.md. Errors are {"error": {code, message, …}}.',
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": schemas,
        },
        "paths": paths,
    }


SPEC: dict[str, Any] = document(dev_idp=True)
"""The document with the dev IdP and the default surface matrix."""


def add_routes(
    app: web.Application, *, dev_idp: bool, surfaces: Collection[str] = DEFAULT_SURFACES
) -> None:
    """Mount the document and its alias (no authentication)."""
    body = document(dev_idp=dev_idp, surfaces=surfaces)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(body)

    async def alias(request: web.Request) -> web.Response:
        # The alias sits under the dashboard's /api/v1/* proxy, which takes every
        # method: answer them all here, so other methods get 405, not runtime.
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        return web.json_response(body)

    app.router.add_get("/openapi.json", openapi)
    app.router.add_route("*", ALIAS, alias)
