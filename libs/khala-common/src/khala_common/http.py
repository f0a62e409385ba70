"""aiohttp helpers: health/readiness/metrics routes, JSON errors, request ids.

`/healthz` answers while the process runs; `/readyz` runs every registered
readiness check (Postgres, broker, dependencies) and answers 503 naming the
first that fails, or once the service has started draining.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadinessCheck = Callable[[], Awaitable[None]]

class Readiness:
    """Named readiness checks plus a draining flag."""

    def __init__(self) -> None:
        self.checks: dict[str, ReadinessCheck] = {}
        self.draining = False

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def problems(self) -> list[str]:
        """Names and errors of failing checks (empty when ready)."""
        if self.draining:
            return ["draining"]
        failing: list[str] = []
        for name, check in self.checks.items():
            try:
                await check()
            except Exception as exc:
                failing.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        return failing


readiness_key = web.AppKey("khala_readiness", Readiness)


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The JSON error body every Khala HTTP API uses."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    return web.json_response({"error": body}, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map ApiError and aiohttp's HTTP errors to JSON bodies; log the unexpected."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status, "bad_request")
        response = error_response(exc.status, code, exc.reason or code)
    except Exception:
        structlog.get_logger("http").exception("unhandled error", path=request.path)
        response = error_response(500, "internal", "internal error")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = request_id
    return response


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 `bad_request`."""
    try:
        data = await request.json(loads=_loads)
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception:
        raise ApiError(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return data


def _loads(text: str) -> Any:
    import json

    return json.loads(text)


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    problems = await request.app[readiness_key].problems()
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_operational_routes(app: web.Application, readiness: Readiness) -> None:
    """Mount /healthz, /readyz and /metrics."""
    app[readiness_key] = readiness
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)


def make_app(readiness: Readiness, *, client_max_size: int = 1024**2) -> web.Application:
    """An aiohttp app with the error middleware and operational routes."""
    app = web.Application(middlewares=[error_middleware], client_max_size=client_max_size)
    add_operational_routes(app, readiness)
    return app
