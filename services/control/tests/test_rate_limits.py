"""Rate limits on sign-in and refresh (per client address) and on mints (per
user): 429 `rate_limited` with a Retry-After header, over real HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest

from khala_control.app import ControlApp
from khala_control.domain.rate_limit import RateLimit, RateLimitSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def limited(control_settings) -> AsyncIterator[ControlApp]:
    settings = dataclasses.replace(
        control_settings,
        rate_limits=RateLimitSettings(
            sign_in=RateLimit(3, 60.0), refresh=RateLimit(2, 60.0), mint=RateLimit(2, 60.0)
        ),
        trusted_proxy_hops=1,
    )
    async with ControlApp(settings) as app:
        yield app


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: object,
    *,
    token: str | None = None,
    forwarded_for: str | None = None,
) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


def assert_limited(status: int, body: dict, headers) -> None:
    assert status == 429, body
    assert body["error"]["code"] == "rate_limited"
    retry = int(headers["Retry-After"])
    assert 1 <= retry <= 60
    assert body["error"]["retry_after_s"] == retry


async def sign_in(http, app: ControlApp, email: str, ip: str, device: str = "d"):
    async with http.post(f"{app.base_url}/api/dev/id-token", json={"email": email}) as response:
        id_token = (await response.json())["id_token"]
    return await post(
        http,
        f"{app.base_url}/api/auth/session",
        {"id_token": id_token, "device_id": device, "surface": "desktop"},
        forwarded_for=ip,
    )


async def test_sign_in_is_limited_per_client_address(limited, http, email) -> None:
    for i in range(3):
        status, body, _ = await sign_in(http, limited, email, "203.0.113.7", f"d{i}")
        assert status == 200, body
    assert_limited(*await sign_in(http, limited, email, "203.0.113.7", "d4"))
    # Another address has its own bucket; a spoofed left-most entry is not trusted.
    status, _, _ = await sign_in(http, limited, email, "1.1.1.1, 203.0.113.8")
    assert status == 200
    assert_limited(*await sign_in(http, limited, email, "1.1.1.1, 203.0.113.7"))


async def test_refresh_is_limited_per_client_address(limited, http, email) -> None:
    status, session, _ = await sign_in(http, limited, email, "198.51.100.1")
    assert status == 200
    token = session["refresh_token"]
    url = f"{limited.base_url}/api/auth/refresh"
    for _ in range(2):
        status, body, _ = await post(
            http, url, {"refresh_token": token}, forwarded_for="198.51.100.2"
        )
        assert status == 200, body
        token = body["refresh_token"]
    assert_limited(*await post(http, url, {"refresh_token": token}, forwarded_for="198.51.100.2"))
    # the refused call did not spend the token
    status, body, _ = await post(http, url, {"refresh_token": token}, forwarded_for="198.51.100.3")
    assert status == 200, body


async def test_mint_is_limited_per_user(limited, http, email) -> None:
    url = f"{limited.base_url}/api/sync/token"
    _, alice, _ = await sign_in(http, limited, f"alice-{email}", "192.0.2.1")
    _, alice_phone, _ = await sign_in(http, limited, f"alice-{email}", "192.0.2.1", "phone")
    _, bob, _ = await sign_in(http, limited, f"bob-{email}", "192.0.2.1", "bob")
    for session in (alice, alice_phone):  # two devices share the user's bucket
        status, body, _ = await post(http, url, {}, token=session["access_token"])
        assert status == 200, body
    assert_limited(*await post(http, url, {}, token=alice["access_token"]))
    assert_limited(*await post(http, url, {}, token=alice_phone["access_token"]))
    status, body, _ = await post(http, url, {}, token=bob["access_token"])
    assert status == 200, body


async def test_limits_can_be_switched_off(control, http, email) -> None:
    """The shared test app runs with every limit off: many sign-ins from one address."""
    for i in range(5):
        status, body, _ = await sign_in(http, control, email, "", f"x{i}")
        assert status == 200, body
