"""aiohttp helpers: health/readiness/metrics routes, JSON errors, request ids,
RED metrics of every route, and the internal admin listener.

`/healthz` answers while the process runs (liveness: it never calls a
dependency); `/readyz` runs every registered readiness check (Postgres, broker,
dependencies) and answers 503 naming the first that fails, or once the service
has started draining.

Admin port: with `admin_port` set (`KHALA_<SVC>_ADMIN_PORT`, deploy/k8s sets
it), `/metrics` and the service's admin routes are served only by a second
listener on that port, which the Ingress never exposes; the public port keeps
`/healthz` and `/readyz`. With `admin_port` 0 (the default, `make run` and the
tests) everything stays on the public port.

Dependency outages: an error raised because Postgres or RabbitMQ is unreachable
(connection refused/reset, pool closed, channel gone) is answered `503
unavailable` with `Retry-After`, never `500`.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from khala_common.telemetry import exemplar, extract_context, tracer, with_request_id

# RED metrics of every HTTP route (the route's template, never the raw path).
HTTP_REQUESTS = Counter(
    "khala_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "khala_http_request_duration_seconds",
    "Time to answer an HTTP request (WebSocket routes: the whole session), by route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
_tracer = tracer("khala_common.http")
# Seconds a client is told to wait after a dependency outage answer.
DEPENDENCY_RETRY_AFTER_S = 2

ReadinessCheck = Callable[[], Awaitable[None]]


class Readiness:
    """Named readiness checks plus a draining flag. Listeners (the gRPC server's
    health status) hear every change of the verdict, each time /readyz is asked."""

    def __init__(self) -> None:
        self.checks: dict[str, ReadinessCheck] = {}
        self.draining = False
        self.listeners: list[Callable[[bool], Awaitable[None]]] = []
        self._ready: bool | None = None

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def problems(self) -> list[str]:
        """Names and errors of failing checks (empty when ready)."""
        failing: list[str] = []
        if self.draining:
            failing.append("draining")
        else:
            for name, check in self.checks.items():
                try:
                    await check()
                except Exception as exc:
                    failing.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        ready = not failing
        if ready != self._ready:
            self._ready = ready
            for listener in self.listeners:
                await listener(ready)
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
    # The request id travels on with the trace (baggage), e.g. into the outbox.
    baggage_token = otel_context.attach(with_request_id(request_id))
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
        if "Allow" in exc.headers:  # RFC 9110: a 405 names the methods the resource allows
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        if is_dependency_outage(exc):
            structlog.get_logger("http").warning(
                "dependency unavailable", path=request.path, error=repr(exc)[:300]
            )
            response = error_response(
                503,
                "unavailable",
                "a dependency is unavailable; retry later",
                retry_after_s=DEPENDENCY_RETRY_AFTER_S,
            )
            response.headers["Retry-After"] = str(DEPENDENCY_RETRY_AFTER_S)
        else:
            structlog.get_logger("http").exception("unhandled error", path=request.path)
            response = error_response(500, "internal", "internal error")
    finally:
        otel_context.detach(baggage_token)
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = request_id
    return response


def is_dependency_outage(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) means Postgres or RabbitMQ cannot be reached:
    a lost or refused connection, a closed pool, a closed AMQP channel."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, ConnectionError | TimeoutError | socket.gaierror):
            return True
        module = type(current).__module__
        name = type(current).__name__
        if module.startswith("asyncpg") and (
            "Connection" in name
            or name
            in (
                "InterfaceError",
                "CannotConnectNowError",
                "TooManyConnectionsError",
                "AdminShutdownError",
            )
        ):
            return True
        if module.startswith(("aiormq", "aio_pika", "pamqp")) and (
            "Connection" in name or "Channel" in name or name == "AMQPError"
        ):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


@web.middleware
async def red_metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count and time every request by route template (RED: rate, errors, duration),
    in a server span continuing the caller's `traceparent`; the duration's exemplar
    names the trace."""
    started = time.perf_counter()
    status = 500
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    with _tracer.start_as_current_span(
        f"{request.method} {route}", context=extract_context(request.headers), kind=SpanKind.SERVER
    ):
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
            HTTP_DURATION.labels(request.method, route).observe(
                time.perf_counter() - started, exemplar()
            )


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


async def _metrics(request: web.Request) -> web.Response:
    # OpenMetrics (which carries exemplars) when the scraper asks for it.
    if "application/openmetrics-text" in request.headers.get("Accept", ""):
        body = openmetrics_latest(REGISTRY)  # type: ignore[no-untyped-call]
        content_type = OPENMETRICS_CONTENT_TYPE
    else:
        body, content_type = generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_operational_routes(
    app: web.Application, readiness: Readiness, *, metrics: bool = True
) -> None:
    """Mount /healthz, /readyz and (unless `metrics` is false) /metrics."""
    app[readiness_key] = readiness
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    if metrics:
        app.router.add_get("/metrics", _metrics)


admin_app_key = web.AppKey("khala_admin_app", web.Application)


def make_app(
    readiness: Readiness,
    *,
    client_max_size: int = 1024**2,
    admin_port: int = 0,
    admin_host: str = "127.0.0.1",
) -> web.Application:
    """An aiohttp app with the error and RED-metrics middlewares and operational routes.

    `admin_port` > 0 starts a second listener (with the app, on `admin_host`)
    serving /healthz, /readyz, /metrics and whatever `admin_router(app)` gets;
    the public app then has no /metrics. With 0 the admin router is the public one.
    """
    app = web.Application(
        middlewares=[red_metrics_middleware, error_middleware], client_max_size=client_max_size
    )
    if not admin_port:
        add_operational_routes(app, readiness)
        app[admin_app_key] = app
        return app
    add_operational_routes(app, readiness, metrics=False)
    admin = web.Application(middlewares=[red_metrics_middleware, error_middleware])
    add_operational_routes(admin, readiness)
    app[admin_app_key] = admin

    async def admin_listener(_: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(admin, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, admin_host, admin_port, reuse_address=True)
        await site.start()
        structlog.get_logger("http").info("admin listening", host=admin_host, port=admin_port)
        try:
            yield
        finally:
            await runner.cleanup()

    app.cleanup_ctx.insert(0, admin_listener)
    return app


def admin_router(app: web.Application) -> web.UrlDispatcher:
    """The router of the internal admin listener (the public one when there is none)."""
    return app[admin_app_key].router
