"""Control serves the operator dashboard and proxies runtime's API from the same origin."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from khala_client import KhalaApi

pytestmark = pytest.mark.e2e


async def test_dashboard_assets_are_served(stack, http: aiohttp.ClientSession) -> None:
    base = stack.url("control")
    async with http.get(f"{base}/dashboard", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/dashboard/"
    async with http.get(f"{base}/dashboard/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "<html" in (await response.text()).lower()
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(f"{base}/dashboard/lib/khala-client.js") as response:
        assert response.status == 200
        assert response.content_type in ("text/javascript", "application/javascript")
    async with http.get(f"{base}/dashboard/%2e%2e/%2e%2e/pyproject.toml") as response:
        assert response.status in (403, 404)


async def test_runtime_api_through_control(
    stack, api: KhalaApi, org_id: str, http: aiohttp.ClientSession
) -> None:
    run_id = f"proxy-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id, title="via runtime")
    assert api.session is not None
    auth = {"Authorization": f"Bearer {api.session.access_token}"}
    base = stack.url("control")
    async with http.get(f"{base}/api/v1/runs/{run_id}", headers=auth) as response:
        assert response.status == 200
        assert (await response.json())["run_id"] == run_id
    async with http.post(
        f"{base}/api/v1/runs/{run_id}/events",
        headers=auth,
        json={"events": [{"type": "run.started", "idempotency_key": "s"}]},
    ) as response:
        assert response.status == 201
        assert (await response.json())["last_seq"] == 2
    async with http.get(f"{base}/api/v1/runs/{run_id}") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"
