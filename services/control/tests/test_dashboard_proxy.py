"""The dashboard's /api/v1/* proxy forwards only runtime's public API, whatever the
spelling of the path (real HTTP against control; runtime is a recording server)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from khala_control.app import ControlApp
from khala_control.handlers.http_dashboard import public_api_path

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime_double() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.rel_url.raw_path_qs)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


BAD = [
    "/api/v1/../../metrics",
    "/api/v1/runs/../../../metrics",
    "/api/v1/%2e%2e/%2e%2e/metrics",
    "/api/v1/runs/%2e%2e/%2e%2e/internal/v1/anything",
    "/api/v1/internal/x",
    "/api/v1/healthz",
    "/api/v1/runs//events",
    "/api/v1/runs/r1/events/extra",
]


async def test_only_the_public_api_is_forwarded(control_settings, runtime_double) -> None:
    runtime_url, seen = runtime_double
    settings = dataclasses.replace(control_settings, runtime_url=runtime_url)
    async with ControlApp(settings) as app, aiohttp.ClientSession() as http:
        for raw in BAD:
            async with http.get(URL(f"{app.base_url}{raw}", encoded=True)) as response:
                answer = await response.json()
            assert (response.status, answer["error"]["code"]) == (404, "not_found"), raw
        good = "/api/v1/runs/r1/events?after_seq=3"
        async with http.get(URL(f"{app.base_url}{good}", encoded=True)) as response:
            assert response.status == 200
    assert seen == [good]


def test_public_api_path() -> None:
    assert public_api_path("/api/v1/workers/w-1/heartbeat") == "/api/v1/workers/w-1/heartbeat"
    assert public_api_path("/api/v1/runs") == "/api/v1/runs"
    for bad in ("/api/v1/", "/api/v1/runs/", "/api/v1/runs/a.b", "/api/v2/runs", "/api/v1/Runs"):
        assert public_api_path(bad) is None, bad
