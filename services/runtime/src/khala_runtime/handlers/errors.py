"""Mapping of domain error codes to HTTP statuses and gRPC status codes.

The same refusal always gets the same code on both edges.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web

from khala_common.http import ApiError, error_response
from khala_common.logs import get_logger
from khala_runtime.domain.errors import DomainError
from khala_runtime.usecases.auth import AuthError, ControlUnavailable

log = get_logger("khala_runtime.errors")

HTTP_STATUS = {
    "validation_error": 422,
    "unknown_event_type": 422,
    "forbidden": 403,
    "forbidden_surface": 403,
    "run_not_found": 404,
    "worker_not_found": 404,
    "stream_not_found": 404,
    "run_exists": 409,
    "worker_exists": 409,
    "worker_stopped": 409,
    "seq_conflict": 409,
    "idempotency_conflict": 409,
    "invalid_transition": 409,
    "terminal_state": 409,
    "frame_too_large": 413,
}

GRPC_STATUS = {
    "validation_error": grpc.StatusCode.INVALID_ARGUMENT,
    "unknown_event_type": grpc.StatusCode.INVALID_ARGUMENT,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "forbidden_surface": grpc.StatusCode.PERMISSION_DENIED,
    "run_not_found": grpc.StatusCode.NOT_FOUND,
    "worker_not_found": grpc.StatusCode.NOT_FOUND,
    "stream_not_found": grpc.StatusCode.NOT_FOUND,
    "run_exists": grpc.StatusCode.ALREADY_EXISTS,
    "worker_exists": grpc.StatusCode.ALREADY_EXISTS,
    "worker_stopped": grpc.StatusCode.FAILED_PRECONDITION,
    "seq_conflict": grpc.StatusCode.ABORTED,
    "idempotency_conflict": grpc.StatusCode.ALREADY_EXISTS,
    "invalid_transition": grpc.StatusCode.FAILED_PRECONDITION,
    "terminal_state": grpc.StatusCode.FAILED_PRECONDITION,
    "frame_too_large": grpc.StatusCode.INVALID_ARGUMENT,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def domain_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn domain and auth refusals into ApiError (rendered by khala_common)."""
    try:
        return await handler(request)
    except DomainError as exc:
        if exc.code == "rate_limited":
            response = error_response(429, exc.code, exc.message, **exc.details)
            response.headers["Retry-After"] = str(exc.details.get("retry_after_s", 1))
            return response
        raise ApiError(
            HTTP_STATUS.get(exc.code, 400), exc.code, exc.message, **exc.details
        ) from None
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    except ControlUnavailable as exc:
        # The gRPC status text names internal hosts: it goes to the log, not the body.
        log.warning("session introspection failed", error=str(exc))
        raise ApiError(
            503, "control_unavailable", "cannot verify the session right now; retry"
        ) from None
