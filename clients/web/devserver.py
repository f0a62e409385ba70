"""Serve the operator dashboard locally, the way control will serve it.

Static files come from clients/web/dashboard/ (no build step); `/api/v1/*` is
reverse-proxied to runtime and the rest of `/api/*`, `/.well-known/*` and
`/dev-idp/*` to control, so the page and both APIs share one origin (control
and runtime send no CORS headers). The WebSocket goes straight to the gateway
(`?gateway=ws://…/v1/ws`): WebSockets are not subject to CORS.

    uv run --no-sync python clients/web/devserver.py \\
        --control http://127.0.0.1:8081 --runtime http://127.0.0.1:8082 --port 8090
    # then open http://127.0.0.1:8090/?gateway=ws://127.0.0.1:8084/v1/ws

Used by tests/e2e/test_dashboard.py with ephemeral ports.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

DASHBOARD = Path(__file__).resolve().parent / "dashboard"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "accept", "traceparent")
FORWARDED_RESPONSE_HEADERS = (
    "content-type",
    "www-authenticate",
    "retry-after",
    "idempotent-replayed",
)
UPSTREAM: web.AppKey[dict[str, str]] = web.AppKey("upstream", dict)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)


async def _proxy(request: web.Request, base: str) -> web.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}
    body = await request.read()
    try:
        async with request.app[HTTP].request(
            request.method,
            f"{base}{request.rel_url}",
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {
                k: v for k, v in upstream.headers.items() if k.lower() in FORWARDED_RESPONSE_HEADERS
            }
            return web.Response(status=upstream.status, body=payload, headers=out)
    except aiohttp.ClientError as exc:
        return web.json_response(
            {"error": {"code": "bad_gateway", "message": f"upstream {base} unreachable: {exc}"}},
            status=502,
        )


async def to_runtime(request: web.Request) -> web.Response:
    """`/api/v1/*` -> runtime."""
    return await _proxy(request, request.app[UPSTREAM]["runtime"])


async def to_control(request: web.Request) -> web.Response:
    """Every other API route -> control."""
    return await _proxy(request, request.app[UPSTREAM]["control"])


async def static(request: web.Request) -> web.StreamResponse:
    """A file of the dashboard directory (`/` is index.html)."""
    relative = request.match_info.get("path", "") or "index.html"
    path = (DASHBOARD / relative).resolve()
    if not path.is_relative_to(DASHBOARD) or not path.is_file() or path.suffix not in CONTENT_TYPES:
        return web.json_response(
            {"error": {"code": "not_found", "message": "no such file"}}, status=404
        )
    return web.Response(
        body=path.read_bytes(),
        headers={
            "Content-Type": CONTENT_TYPES[path.suffix],
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


def make_app(control_url: str, runtime_url: str) -> web.Application:
    """The dashboard app: static files plus the two API proxies."""
    app = web.Application()
    app[UPSTREAM] = {"control": control_url.rstrip("/"), "runtime": runtime_url.rstrip("/")}

    async def client_session(app: web.Application):  # type: ignore[no-untyped-def]
        app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        yield
        await app[HTTP].close()

    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/api/v1/{tail:.*}", to_runtime)
    for prefix in ("/api/", "/.well-known/", "/dev-idp/"):
        app.router.add_route("*", prefix + "{tail:.*}", to_control)
    app.router.add_get("/", static)
    app.router.add_get("/{path:.+}", static)
    return app


async def start(
    control_url: str, runtime_url: str, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start the server; returns the runner (call `cleanup()`) and its base URL."""
    runner = web.AppRunner(make_app(control_url, runtime_url))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{bound}"


def main() -> None:
    """Run until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve the Khala dashboard with API proxies.")
    parser.add_argument("--control", default="http://127.0.0.1:8081")
    parser.add_argument("--runtime", default="http://127.0.0.1:8082")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()

    async def serve() -> None:
        runner, url = await start(args.control, args.runtime, args.host, args.port)
        print(f"dashboard on {url}/?gateway=ws://127.0.0.1:8084/v1/ws  (Ctrl-C stops)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
