"""A 405 from any Khala HTTP API carries the `Allow` header RFC 9110 requires,
next to the JSON error envelope."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from khala_common.http import error_middleware


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_method_not_allowed_names_the_allowed_methods() -> None:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/thing", _ok)
    app.router.add_post("/thing", _ok)
    async with TestClient(TestServer(app)) as client:
        response = await client.delete("/thing")
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
        assert (await response.json())["error"]["code"] == "method_not_allowed"
        other = await client.get("/nothing")
        assert other.status == 404 and "Allow" not in other.headers
