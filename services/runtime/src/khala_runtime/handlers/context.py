"""What every HTTP route needs: the app's services, the caller, path ids, bodies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khala_common.http import read_json_object
from khala_runtime.domain.access import Principal
from khala_runtime.domain.errors import ValidationError
from khala_runtime.domain.ids import is_valid_segment
from khala_runtime.domain.rate_limit import OrgRateLimiter
from khala_runtime.usecases.audit import AuditLog
from khala_runtime.usecases.auth import Authenticator
from khala_runtime.usecases.runs import RunService
from khala_runtime.usecases.workers import WorkerService

service_key = web.AppKey("runtime_service", RunService)
worker_service_key = web.AppKey("runtime_worker_service", WorkerService)
auth_key = web.AppKey("runtime_auth", Authenticator)
audit_key = web.AppKey("runtime_audit", AuditLog)
append_limit_key = web.AppKey("runtime_append_limit", OrgRateLimiter)

MAX_PAGE = 1000
REPLAY_HEADER = "Idempotent-Replayed"
SEGMENT_RULE = "must match [A-Za-z0-9_-]{1,64}"


async def principal(request: web.Request) -> Principal:
    """The authenticated caller (AuthError otherwise)."""
    return await request.app[auth_key].authenticate(request.headers.get("Authorization"))


def path_id(request: web.Request, name: str) -> str:
    """A path segment that must be a topic segment (422 naming it otherwise)."""
    value = request.match_info[name]
    if not is_valid_segment(value):
        raise ValidationError(name, SEGMENT_RULE)
    return value


def query_org(request: web.Request) -> str:
    """The required `org_id` query parameter."""
    org_id = request.query.get("org_id")
    if org_id is None or not is_valid_segment(org_id):
        raise ValidationError("org_id", f"required; {SEGMENT_RULE}")
    return org_id


async def optional_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body reads as `{}`."""
    if not request.body_exists:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    return await read_json_object(request)


def receipt_response(body: dict[str, Any], replayed: bool) -> web.Response:
    """201 with a new receipt, 200 with a replayed one (header says which)."""
    response = web.json_response(body, status=200 if replayed else 201)
    response.headers[REPLAY_HEADER] = "true" if replayed else "false"
    return response
