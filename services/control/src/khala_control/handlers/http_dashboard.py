"""The operator dashboard (clients/web/dashboard) as static assets, and a proxy
of runtime's `/api/v1/*` so the page reaches both APIs from one origin.

The proxy forwards method, body and the caller's Authorization to runtime,
which authorizes every call itself; control adds no authority of its own.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from khala_common.http import ApiError

_FORWARD_REQUEST = ("Authorization", "Content-Type", "traceparent", "tracestate", "X-Request-Id")
_FORWARD_RESPONSE = ("Content-Type", "WWW-Authenticate", "Retry-After", "Idempotent-Replayed")
_session_key = web.AppKey("runtime_proxy_session", aiohttp.ClientSession)
_runtime_key = web.AppKey("runtime_url", str)


@web.middleware
async def _asset_headers(request: web.Request, handler):  # type: ignore[no-untyped-def]
    response = await handler(request)
    if request.path.startswith("/dashboard/"):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
    return response


async def _to_index(_: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


def _index(directory: Path):  # type: ignore[no-untyped-def]
    async def serve(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(directory / "index.html")

    return serve


async def _proxy(request: web.Request) -> web.StreamResponse:
    """Forward one /api/v1/* call to runtime and relay its answer."""
    url = request.app[_runtime_key] + request.path_qs
    headers = {k: v for k in _FORWARD_REQUEST if (v := request.headers.get(k)) is not None}
    try:
        async with request.app[_session_key].request(
            request.method, url, headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            relayed = {
                k: v for k in _FORWARD_RESPONSE if (v := upstream.headers.get(k)) is not None
            }
            return web.Response(status=upstream.status, body=body, headers=relayed)
    except (aiohttp.ClientError, TimeoutError):
        raise ApiError(502, "runtime_unavailable", "runtime did not answer") from None


async def _proxy_session(app: web.Application):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        app[_session_key] = session
        yield


def add_dashboard(app: web.Application, directory: Path | None, runtime_url: str) -> None:
    """Serve the dashboard under /dashboard/ (if `directory` is set) and proxy runtime's API."""
    app[_runtime_key] = runtime_url.rstrip("/")
    app.cleanup_ctx.append(_proxy_session)
    app.router.add_route("*", "/api/v1/{tail:.*}", _proxy)
    if directory is None:
        return
    app.middlewares.append(_asset_headers)
    app.router.add_get("/dashboard", _to_index)
    app.router.add_get("/dashboard/", _index(directory))
    app.router.add_static("/dashboard/", directory, follow_symlinks=False)
