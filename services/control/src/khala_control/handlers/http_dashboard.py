"""The operator dashboard (clients/web/dashboard) as static assets, and a proxy
of runtime's `/api/v1/*` so the page reaches both APIs from one origin.

The proxy forwards method, body and the caller's Authorization to runtime,
which authorizes every call itself; control adds no authority of its own. It
forwards only runtime's public API: the path must be `/api/v1/runs...` or
`/api/v1/workers...` made of plain segments (`[A-Za-z0-9_-]`, no dot segments,
no percent-encoding), so no spelling of a path reaches runtime's operational
or internal routes; anything else is 404 `not_found` without a call to runtime.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from khala_common.http import ApiError
from khala_common.topics import is_valid_segment

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


_PREFIX = "/api/v1/"
_PUBLIC_ROOTS = ("runs", "workers")


def public_api_path(raw_path: str) -> str | None:
    """`raw_path` if it names runtime's public API in plain segments, else None."""
    if not raw_path.startswith(_PREFIX):
        return None
    segments = raw_path[len(_PREFIX) :].split("/")
    if segments[0] not in _PUBLIC_ROOTS or len(segments) > 3:
        return None
    if not all(is_valid_segment(segment) for segment in segments):
        return None
    return raw_path


async def _proxy(request: web.Request) -> web.StreamResponse:
    """Forward one /api/v1/* call to runtime and relay its answer."""
    path = public_api_path(request.rel_url.raw_path)
    if path is None:
        raise ApiError(404, "not_found", "no such route")
    query = request.rel_url.raw_query_string
    url = request.app[_runtime_key] + path + (f"?{query}" if query else "")
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
