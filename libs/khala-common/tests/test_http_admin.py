"""The shared HTTP setup: the internal admin listener, RED metrics of every
route, and dependency outages answered 503 + Retry-After (never 500)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from khala_common.http import Readiness, admin_router, make_app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _lost_db(_: web.Request) -> web.Response:
    raise asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    )


async def _refused(_: web.Request) -> web.Response:
    raise ConnectionRefusedError(111, "Connect call failed")


async def _bug(_: web.Request) -> web.Response:
    raise KeyError("a bug")


async def _admin(_: web.Request) -> web.Response:
    return web.json_response({"admin": True})


async def _started(admin_port: int) -> tuple[web.AppRunner, int]:
    app = make_app(Readiness(), admin_port=admin_port)
    app.router.add_get("/lost-db/{id}", _lost_db)
    app.router.add_get("/refused", _refused)
    app.router.add_get("/bug", _bug)
    admin_router(app).add_get("/internal/thing", _admin)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest.fixture
async def split() -> AsyncIterator[tuple[int, int]]:
    admin_port = _free_port()
    runner, port = await _started(admin_port)
    yield port, admin_port
    await runner.cleanup()


async def test_admin_port_serves_metrics_and_admin_routes_public_port_does_not(
    split: tuple[int, int],
) -> None:
    port, admin_port = split
    async with aiohttp.ClientSession() as http:
        for path in ("/metrics", "/internal/thing"):
            async with http.get(f"http://127.0.0.1:{port}{path}") as public:
                assert public.status == 404, path
            async with http.get(f"http://127.0.0.1:{admin_port}{path}") as admin:
                assert admin.status == 200, path
        for path in ("/healthz", "/readyz"):
            for p in (port, admin_port):
                async with http.get(f"http://127.0.0.1:{p}{path}") as response:
                    assert response.status == 200, (p, path)


async def test_without_admin_port_everything_is_on_the_public_port() -> None:
    runner, port = await _started(0)
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/internal/thing"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == 200, path
    finally:
        await runner.cleanup()


async def test_dependency_outage_is_503_with_retry_after_and_a_bug_stays_500(
    split: tuple[int, int],
) -> None:
    port, admin_port = split
    async with aiohttp.ClientSession() as http:
        for path in ("/lost-db/7", "/refused"):
            async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                assert response.status == 503, path
                assert response.headers["Retry-After"] == "2"
                assert (await response.json())["error"]["code"] == "unavailable"
        async with http.get(f"http://127.0.0.1:{port}/bug") as response:
            assert response.status == 500
        async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
            text = await response.text()
    # RED: counted by route template, not by raw path
    assert 'khala_http_requests_total{method="GET",route="/lost-db/{id}",status="503"}' in text
    assert 'khala_http_requests_total{method="GET",route="/bug",status="500"}' in text
    assert 'khala_http_request_duration_seconds_count{method="GET",route="/refused"}' in text
