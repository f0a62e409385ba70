"""How control's error codes map onto HTTP statuses and headers.

khala_common's `ApiError` carries no headers, so control answers its own
refusals here: 401s get a `WWW-Authenticate: Bearer` challenge (RFC 6750) and
429s a `Retry-After` (whole seconds, also in the body as `retry_after_s`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from khala_common.http import error_response
from khala_control.domain.errors import ControlError

HTTP_STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_topic": 400,
    "unauthorized": 401,
    "token_expired": 401,
    "forbidden": 403,
    "forbidden_topic": 403,
    "surface_mismatch": 403,
    "org_not_found": 404,
    "user_not_found": 404,
    "member_not_found": 404,
    "session_not_found": 404,
    "invitation_not_found": 404,
    "already_member": 409,
    "invitation_closed": 409,
    "not_a_member": 409,
    "invitation_expired": 410,
    "org_exists": 409,
    "last_owner": 409,
    "upgrade_required": 426,
    "rate_limited": 429,
    "audit_unavailable": 503,
    "idp_unavailable": 503,
}
REALM = "khala-control"


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


def error_headers(exc: ControlError, *, credentials_sent: bool) -> dict[str, str]:
    """Headers a refusal carries besides its JSON body."""
    if HTTP_STATUS.get(exc.code) == 401:
        if not credentials_sent:
            return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
        return {
            "WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", '
            f'error_description="{_quoted(exc.message)}"'
        }
    if exc.code == "rate_limited":
        return {"Retry-After": str(exc.extra.get("retry_after_s", 1))}
    return {}


def to_response(exc: ControlError, *, credentials_sent: bool) -> web.Response:
    """The JSON error answer of a domain refusal (unknown codes are a 500: a bug)."""
    response = error_response(HTTP_STATUS.get(exc.code, 500), exc.code, exc.message, **exc.extra)
    response.headers.update(error_headers(exc, credentials_sent=credentials_sent))
    return response


@web.middleware
async def control_error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer ControlError with its status, body and headers."""
    try:
        return await handler(request)
    except ControlError as exc:
        return to_response(exc, credentials_sent="Authorization" in request.headers)
