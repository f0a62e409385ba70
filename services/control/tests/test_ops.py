"""Operational routes: /healthz, /readyz, /metrics."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_health_and_readiness(client) -> None:
    assert await client.ok("GET", "/healthz") == {"status": "ok"}
    assert await client.ok("GET", "/readyz") == {"status": "ready"}


async def test_metrics_count_sessions_mints_and_denials(client, http, email) -> None:
    async def metric(name: str) -> float:
        async with http.get(f"{client.base_url}/metrics") as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    before = [
        await metric('khala_control_sessions_created_total{surface="desktop"}'),
        await metric('khala_control_tokens_minted_total{kind="sync"}'),
        await metric('khala_control_denials_total{code="forbidden_topic"}'),
    ]
    access = (await client.sign_in(email))["access_token"]
    await client.ok("POST", "/api/sync/token", {}, token=access)
    await client.call("POST", "/api/sync/token", {"topics": ["org.nobody-here.runs"]}, token=access)
    after = [
        await metric('khala_control_sessions_created_total{surface="desktop"}'),
        await metric('khala_control_tokens_minted_total{kind="sync"}'),
        await metric('khala_control_denials_total{code="forbidden_topic"}'),
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


async def test_unknown_route_is_json_404(client) -> None:
    status, body = await client.call("GET", "/api/nothing")
    assert (status, body["error"]["code"]) == (404, "not_found")
