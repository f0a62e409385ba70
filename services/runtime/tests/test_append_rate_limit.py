"""Integration: the per-org append rate limit over real HTTP (429 + Retry-After,
nothing written, other orgs unaffected)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from khala_runtime.app import start
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.rate_limit import OrgRateLimiter

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(
        self, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json(), dict(r.headers)


def events(n: int, tag: str) -> dict[str, Any]:
    return {"events": [{"type": "run.output", "payload": {"text": f"{tag}{i}"}} for i in range(n)]}


async def test_an_org_over_its_append_rate_gets_429_and_nothing_is_written(
    control: Any, settings_for: Any, identity: Any, unique: str
) -> None:
    _, _, url, target = control
    settings = settings_for(
        url,
        target,
        KHALA_RUNTIME_APPEND_RATE_PER_ORG="0.001",
        KHALA_RUNTIME_APPEND_BURST_PER_ORG="500",
    )
    started = await start(settings)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{started.http_port}")
            busy, calm = f"busy{unique}", f"calm{unique}"
            token = identity.login({busy: "owner", calm: "owner"})
            for org in (busy, calm):
                body = {"org_id": org, "run_id": f"r-{org}"}
                assert (await api.call("POST", "/api/v1/runs", token, body))[0] == 201
            run = f"/api/v1/runs/r-{busy}"
            assert (
                await api.call(
                    "POST", f"{run}/events", token, {"events": [{"type": "run.started"}]}
                )
            )[0] == 201
            assert (await api.call("POST", f"{run}/events", token, events(499, "a")))[0] == 201

            status, answer, headers = await api.call("POST", f"{run}/events", token, events(1, "b"))
            assert (status, answer["error"]["code"]) == (429, "rate_limited")
            assert int(headers["Retry-After"]) >= 1
            assert answer["error"]["retry_after_s"] == int(headers["Retry-After"])
            _, snapshot, _ = await api.call("GET", run, token)
            assert (
                snapshot["last_seq"] == 501
            )  # created + started + 499: the refused one wrote nothing
            # another org has its own budget
            calm_run = f"/api/v1/runs/r-{calm}/events"
            assert (await api.call("POST", calm_run, token, {"events": [{"type": "run.started"}]}))[
                0
            ] == 201
    finally:
        await started.stop()


def test_bucket_refills_at_the_rate() -> None:
    limiter = OrgRateLimiter(rate=100.0, burst=200.0)
    limiter.take("o", 200, now=0.0)
    with pytest.raises(DomainError) as refused:
        limiter.take("o", 50, now=0.1)  # 10 tokens back
    assert refused.value.details["retry_after_s"] == 1
    limiter.take("o", 50, now=0.5)  # 50 back
    limiter.take("other", 200, now=0.5)
    OrgRateLimiter(rate=0.0, burst=1.0).take("o", 10_000, now=0.0)  # 0 = off


async def test_control_outage_answers_503_without_internal_details(
    control: Any, settings_for: Any, identity: Any, unique: str
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    _, _, url, _ = control
    started = await start(settings_for(url, dead))
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{started.http_port}")
            token = identity.login({f"o{unique}": "owner"})
            status, answer, _ = await api.call("GET", f"/api/v1/runs?org_id=o{unique}", token)
        assert (status, answer["error"]["code"]) == (503, "control_unavailable")
        assert dead not in str(answer) and "UNAVAILABLE" not in str(answer)
    finally:
        await started.stop()
