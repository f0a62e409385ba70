"""The OpenAPI 3.1 description of control's HTTP API, served without
authentication at `GET /openapi.json` (and its alias `GET /api/v1/openapi.json`).

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

from typing import Any

from aiohttp import web

from khala_control.domain.roles import Role
from khala_control.domain.scope import MAX_REQUESTED_TOPICS
from khala_control.domain.validation import (
    EMAIL_PATTERN,
    MAX_CLIENT_VERSION,
    MAX_DEVICE_ID,
    MAX_NAME,
)
from khala_control.handlers.decode import MAX_QUERY_DIGITS
from khala_control.handlers.errors import REALM
from khala_control.handlers.http_orgs import DEFAULT_AUDIT_PAGE
from khala_control.usecases.dev_idp import ISSUER_PATH
from khala_control.usecases.orgs import MAX_AUDIT_PAGE

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

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_TEXT = {"type": "string", "pattern": r"\S"}  # required strings must not be blank
_TIME = {"type": "string", "format": "date-time"}
_ROLE = {"type": "string", "enum": [role.value for role in Role]}
_OPEN: list[dict[str, list[str]]] = []  # no authentication


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


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
_EXTRAS: dict[str, dict[str, Any]] = {
    "invalid_topic": {"topic": _STR},
    "forbidden_topic": {"topic": _STR},
    "surface_mismatch": {"surface": _STR, "session_surface": _STR},
    "upgrade_required": {"surface": _STR, "minimum_version": _STR},
    "rate_limited": {"retry_after_s": {"type": "integer", "minimum": 1}},
}


def _refusal(status: int, *codes: str) -> dict[str, Any]:
    """A refusal with `status` whose `error.code` is one of `codes`."""
    required = set.intersection(*(set(_EXTRAS.get(code, {})) for code in codes))
    extras = {name: schema for code in codes for name, schema in _EXTRAS.get(code, {}).items()}
    error = _object(
        ["code", "message", *sorted(required)],
        {"code": {"type": "string", "enum": list(codes)}, "message": _STR, **extras},
    )
    return _json(
        _object(["error"], {"error": error}),
        f"Refused: {', '.join(codes)}",
        **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
    )


def _refusals(*pairs: tuple[int, tuple[str, ...]]) -> dict[str, Any]:
    return {str(status): _refusal(status, *codes) for status, codes in pairs}


_BAD = (400, ("bad_request",))
_DENIED = (401, ("unauthorized", "token_expired"))
_TOO_LARGE = (413, ("payload_too_large",))
_RATE_LIMITED = (429, ("rate_limited",))
_AUDIT = (503, ("audit_unavailable",))

_SCHEMAS: dict[str, Any] = {
    "Issued": _object(
        [
            "access_token",
            "refresh_token",
            "session_id",
            "user_id",
            "expires_at",
            "expires_at_ms",
            "token_type",
        ],
        {
            "access_token": _STR,
            "refresh_token": {"type": "string", "pattern": "^rt_"},
            "session_id": _STR,
            "user_id": _STR,
            "expires_at": _TIME,
            "expires_at_ms": _INT,
            "token_type": {"type": "string", "enum": ["Bearer"]},
        },
    ),
    "DeviceSession": _object(
        [
            "session_id",
            "device_id",
            "surface",
            "client_version",
            "created_at",
            "last_used_at",
            "current",
        ],
        {
            "session_id": _STR,
            "device_id": _STR,
            "surface": _STR,
            "client_version": _STR,
            "created_at": _TIME,
            "last_used_at": _TIME,
            "current": {"type": "boolean"},
        },
    ),
    "Membership": _object(["org_id", "name", "role"], {"org_id": _ID, "name": _STR, "role": _ROLE}),
    "Member": _object(
        ["user_id", "email", "name", "role"],
        {"user_id": _STR, "email": _STR, "name": _STR, "role": _ROLE},
    ),
    "AuditEntry": _object(
        ["audit_id", "at", "at_ms", "action", "user_id", "session_id", "client_ip", "detail"],
        {
            "audit_id": _INT,
            "at": _TIME,
            "at_ms": _INT,
            "action": _STR,
            "user_id": {"type": ["string", "null"]},
            "session_id": {"type": ["string", "null"]},
            "client_ip": {"type": ["string", "null"]},
            "detail": {"type": "object"},
        },
    ),
    "Jwks": _object(
        ["keys"],
        {
            "keys": {
                "type": "array",
                "items": _object(
                    ["kty", "crv", "x", "y", "kid", "alg", "use"],
                    {
                        "kty": {"type": "string", "enum": ["EC"]},
                        "crv": {"type": "string", "enum": ["P-256"]},
                        "x": _STR,
                        "y": _STR,
                        "kid": _STR,
                        "alg": {"type": "string", "enum": ["ES256"]},
                        "use": {"type": "string", "enum": ["sig"]},
                    },
                ),
            }
        },
    ),
}


def _op(
    summary: str,
    ok: dict[str, Any],
    *refusals: tuple[int, tuple[str, ...]],
    parameters: list[dict[str, Any]] | None = None,
    open_: bool = False,
) -> dict[str, Any]:
    """An operation answering 200 with `ok`, or one of `refusals` (status, codes)."""
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_refusals(*refusals)}}
    if parameters:
        op["parameters"] = parameters
    if open_:
        op["security"] = _OPEN
    return op


def _with_body(
    summary: str,
    body: dict[str, Any],
    ok: dict[str, Any],
    *refusals: tuple[int, tuple[str, ...]],
    status: int = 200,
    parameters: list[dict[str, Any]] | None = None,
    open_: bool = False,
) -> dict[str, Any]:
    """An operation with a JSON body (hence also 413), answering `status` with `ok`."""
    op = _op(summary, ok, *refusals, _TOO_LARGE, parameters=parameters, open_=open_)
    op["requestBody"] = _body(body)
    op["responses"] = {str(status): op["responses"].pop("200"), **op["responses"]}
    return op


_ORG, _USER = _path("org_id"), _path("user_id")
_STATUS = _object(["status"], {"status": _STR})
_SPEC_OK = _json({"type": "object"}, "This OpenAPI document")

_PATHS: dict[str, Any] = {
    "/healthz": {"get": _op("Liveness", _json(_STATUS, "The process runs"), open_=True)},
    "/readyz": {
        "get": {
            "summary": "Readiness (Postgres, broker, not draining)",
            "security": _OPEN,
            "responses": {
                "200": _json(_STATUS, "Ready"),
                "503": _json(
                    _object(
                        ["status", "problems"],
                        {"status": _STR, "problems": {"type": "array", "items": _STR}},
                    ),
                    "Not ready",
                ),
            },
        }
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            {"description": "Prometheus text format", "content": {"text/plain": {"schema": _STR}}},
            open_=True,
        )
    },
    "/openapi.json": {"get": _op("This document", _SPEC_OK, open_=True)},
    ALIAS: {"get": _op("Alias of /openapi.json", _SPEC_OK, open_=True)},
    "/.well-known/jwks.json": {
        "get": _op(
            "Public keys (active, next, previous) verifying access and sync tokens",
            _json(_ref("Jwks"), "The JWKS"),
            open_=True,
        )
    },
    "/api/dev/id-token": {
        "post": _with_body(
            "Dev IdP: an ID token for any email (only with KHALA_DEV_IDP_ENABLED=true)",
            _object(
                ["email"],
                {
                    "email": {"type": "string", "pattern": EMAIL_PATTERN},
                    "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
                },
            ),
            _json(_object(["id_token"], {"id_token": _STR}), "A signed ID token (10 min)"),
            _BAD,
            open_=True,
        )
    },
    f"{ISSUER_PATH}/.well-known/openid-configuration": {
        "get": _op(
            "Dev IdP: OpenID discovery document",
            _json(
                _object(["issuer", "jwks_uri"], {"issuer": _STR, "jwks_uri": _STR}),
                "The discovery document",
            ),
            open_=True,
        )
    },
    f"{ISSUER_PATH}/jwks.json": {
        "get": _op("Dev IdP: its public keys", _json(_ref("Jwks"), "The JWKS"), open_=True)
    },
    "/api/auth/session": {
        "post": _with_body(
            "Exchange an ID token for a device session (creates the user on first sign-in)",
            _object(
                ["id_token", "device_id", "surface"],
                {
                    "id_token": _TEXT,
                    "device_id": {**_TEXT, "maxLength": MAX_DEVICE_ID},
                    "surface": _TEXT,
                    "client_version": {"type": ["string", "null"], "maxLength": MAX_CLIENT_VERSION},
                },
            ),
            _json(_ref("Issued"), "Signed in"),
            _BAD,
            _DENIED,
            _RATE_LIMITED,
            (503, ("idp_unavailable", "audit_unavailable")),
            open_=True,
        )
    },
    "/api/auth/refresh": {
        "post": _with_body(
            "Rotate a refresh token (a spent one revokes its session)",
            _object(["refresh_token"], {"refresh_token": _TEXT}),
            _json(_ref("Issued"), "New access and refresh tokens"),
            _BAD,
            _DENIED,
            _RATE_LIMITED,
            _AUDIT,
            open_=True,
        )
    },
    "/api/auth/logout": {
        "post": _op(
            "Revoke the caller's own session",
            _json(
                _object(
                    ["session_id", "revoked"], {"session_id": _STR, "revoked": {"const": True}}
                ),
                "Revoked",
            ),
            _DENIED,
        )
    },
    "/api/auth/sessions": {
        "get": _op(
            "The caller's live device sessions",
            _json(
                _object(
                    ["sessions"], {"sessions": {"type": "array", "items": _ref("DeviceSession")}}
                ),
                "Live sessions",
            ),
            _DENIED,
        )
    },
    "/api/auth/sessions/{session_id}": {
        "delete": _op(
            "Sign out the device of one of the caller's sessions (idempotent)",
            _json(
                _object(
                    ["session_id", "device_id", "revoked", "revoked_session_ids"],
                    {
                        "session_id": _STR,
                        "device_id": _STR,
                        "revoked": {"const": True},
                        "revoked_session_ids": {"type": "array", "items": _STR},
                    },
                ),
                "The device's sessions are revoked (empty list: already were)",
            ),
            _DENIED,
            (404, ("session_not_found", "not_found")),
            parameters=[_path("session_id")],
        )
    },
    "/api/auth/sessions/revoke-all": {
        "post": _op(
            "Revoke every session of the caller, this one included",
            _json(
                _object(
                    ["revoked_session_ids"],
                    {"revoked_session_ids": {"type": "array", "items": _STR}},
                ),
                "Revoked",
            ),
            _DENIED,
        )
    },
    "/api/me": {
        "get": _op(
            "The caller, their session and their memberships",
            _json(
                _object(
                    ["user", "session", "memberships"],
                    {
                        "user": _object(
                            ["user_id", "email", "name"],
                            {"user_id": _STR, "email": _STR, "name": _STR},
                        ),
                        "session": _object(
                            ["session_id", "device_id", "surface"],
                            {"session_id": _STR, "device_id": _STR, "surface": _STR},
                        ),
                        "memberships": {"type": "array", "items": _ref("Membership")},
                    },
                ),
                "The profile",
            ),
            _DENIED,
        )
    },
    "/api/orgs": {
        "post": _with_body(
            "Create an org; the caller becomes its owner",
            _object(["org_id", "name"], {"org_id": _ID, "name": {**_TEXT, "maxLength": MAX_NAME}}),
            _json(_ref("Membership"), "Created"),
            _BAD,
            _DENIED,
            (409, ("org_exists",)),
            status=201,
        )
    },
    "/api/orgs/{org_id}/members/{user_id}": {
        "put": _with_body(
            "Add a member or change their role (owners and admins)",
            _object(["role"], {"role": _ROLE}),
            _json(
                {"allOf": [_ref("Membership"), _object(["user_id"], {"user_id": _STR})]},
                "The membership now",
            ),
            _BAD,
            _DENIED,
            (403, ("forbidden",)),
            (404, ("org_not_found", "user_not_found", "not_found")),
            (409, ("last_owner",)),
            _AUDIT,
            parameters=[_ORG, _USER],
        ),
        "delete": _op(
            "Remove a member (owners and admins; anyone may remove themselves)",
            _json(
                _object(
                    ["org_id", "user_id", "removed"],
                    {"org_id": _STR, "user_id": _STR, "removed": {"const": True}},
                ),
                "Removed",
            ),
            _DENIED,
            (403, ("forbidden",)),
            (404, ("org_not_found", "member_not_found", "not_found")),
            (409, ("last_owner",)),
            _AUDIT,
            parameters=[_ORG, _USER],
        ),
    },
    "/api/orgs/{org_id}/members": {
        "get": _op(
            "The org's members, strongest role first (any member)",
            _json(
                _object(
                    ["org_id", "members"],
                    {"org_id": _STR, "members": {"type": "array", "items": _ref("Member")}},
                ),
                "The members",
            ),
            _DENIED,
            (403, ("forbidden",)),
            (404, ("org_not_found", "not_found")),
            parameters=[_ORG],
        )
    },
    "/api/orgs/{org_id}/audit": {
        "get": _op(
            "One page of the org's audit log, newest first (owners and admins)",
            _json(
                _object(
                    ["org_id", "entries", "next_before"],
                    {
                        "org_id": _STR,
                        "entries": {"type": "array", "items": _ref("AuditEntry")},
                        "next_before": {"type": ["integer", "null"]},
                    },
                ),
                "A page of entries",
            ),
            _BAD,
            _DENIED,
            (403, ("forbidden",)),
            (404, ("org_not_found", "not_found")),
            _AUDIT,
            parameters=[
                _ORG,
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_AUDIT_PAGE,
                        "default": DEFAULT_AUDIT_PAGE,
                    },
                },
                {
                    "name": "before",
                    "in": "query",
                    "description": "`next_before` of the last page",
                    "schema": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 10**MAX_QUERY_DIGITS - 1,
                    },
                },
            ],
        )
    },
    "/api/sync/token": {
        "post": _with_body(
            "Mint a sync token for the gateway (empty topics: all the surface may read)",
            _object(
                [],
                {
                    "topics": {
                        "type": ["array", "null"],
                        "maxItems": MAX_REQUESTED_TOPICS,
                        "items": _STR,
                    },
                    "surface": {
                        "type": ["string", "null"],
                        "description": "Defaults to the session's surface",
                    },
                    "client_version": {"type": ["string", "null"], "maxLength": MAX_CLIENT_VERSION},
                },
            ),
            _json(
                _object(
                    ["token", "expires_at", "expires_at_ms", "scope", "kid"],
                    {
                        "token": _STR,
                        "expires_at": _TIME,
                        "expires_at_ms": _INT,
                        "scope": {"type": "array", "items": _STR},
                        "kid": _STR,
                    },
                ),
                "Minted",
            ),
            (400, ("bad_request", "invalid_topic")),
            _DENIED,
            (403, ("forbidden_topic", "surface_mismatch")),
            (426, ("upgrade_required",)),
            _RATE_LIMITED,
            _AUDIT,
        )
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Khala control API",
        "version": "1",
        "description": "Identity, device sessions, orgs and sync tokens; error codes "
        'in docs/control.md. Errors are {"error": {code, message, …}}.',
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": _SCHEMAS,
    },
    "paths": _PATHS,
}


def document(*, dev_idp: bool) -> dict[str, Any]:
    """SPEC, without the dev IdP's operations when it is disabled."""
    if dev_idp:
        return SPEC
    paths = {path: ops for path, ops in _PATHS.items() if path not in DEV_IDP_PATHS}
    return {**SPEC, "paths": paths}


def add_routes(app: web.Application, *, dev_idp: bool) -> None:
    """Mount the document and its alias (no authentication)."""
    body = document(dev_idp=dev_idp)

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
