"""How control's error codes map onto HTTP and gRPC statuses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from khala_common.http import ApiError
from khala_control.domain.errors import ControlError

HTTP_STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_topic": 400,
    "unauthorized": 401,
    "token_expired": 401,
    "forbidden": 403,
    "forbidden_topic": 403,
    "org_not_found": 404,
    "user_not_found": 404,
    "member_not_found": 404,
    "session_not_found": 404,
    "org_exists": 409,
    "last_owner": 409,
    "upgrade_required": 426,
    "idp_unavailable": 503,
}


def to_api_error(exc: ControlError) -> ApiError:
    """The HTTP error for a domain refusal (unknown codes are a 500: a bug)."""
    return ApiError(HTTP_STATUS.get(exc.code, 500), exc.code, exc.message, **exc.extra)


@web.middleware
async def control_error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn ControlError into ApiError for khala_common's error middleware."""
    try:
        return await handler(request)
    except ControlError as exc:
        raise to_api_error(exc) from None
