"""The session and membership caches: a change made through one control
process reaches another one's next request through Postgres NOTIFY, and a
lost listener makes the caches step aside instead of serving stale data."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from khala_control.app import ControlApp
from khala_control.metrics import CACHE_LOOKUPS
from khala_control.usecases.change_feed import APPLICATION_NAME

pytestmark = pytest.mark.integration


@pytest.fixture
async def second(control, control_settings) -> AsyncIterator[ControlApp]:
    """Another control process on the same database, issuing as the first one."""
    settings = dataclasses.replace(control_settings, token_issuer=control.issuer)
    async with ControlApp(settings) as app:
        yield app


def hits(cache: str = "memberships") -> float:
    return CACHE_LOOKUPS.labels(cache=cache, result="hit")._value.get()


async def wait_for_status(call, expected: int, timeout_s: float = 3.0) -> float:
    """Poll `call()` until it answers `expected`; returns how long that took."""
    started = time.monotonic()
    while True:
        status, body = await call()
        if status == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, (status, body)
        await asyncio.sleep(0.02)


async def test_changes_reach_other_processes_through_notify(
    control, second, client, make_client, http, email, unique
) -> None:
    other = make_client(second.base_url, http)
    owner = await client.sign_in(f"owner-{email}")
    bob = await client.sign_in(f"bob-{email}")
    org = f"mc-{unique}"
    topic = {"topics": [f"org.{org}.runs"]}
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "M"}, token=owner["access_token"])

    async def bob_mints_on_second():
        return await other.call("POST", "/api/sync/token", topic, token=bob["access_token"])

    # bob is not a member: the second process caches that
    assert (await bob_mints_on_second())[0] == 403
    before = hits()
    assert (await bob_mints_on_second())[0] == 403
    assert hits() == before + 1  # served from the cache

    members = f"/api/orgs/{org}/members/{bob['user_id']}"
    await client.join(org, owner, bob, "viewer")
    assert await wait_for_status(bob_mints_on_second, 200) < 1.0

    await client.ok("DELETE", members, token=owner["access_token"])
    assert await wait_for_status(bob_mints_on_second, 403) < 1.0

    # the process that made a change sees it on the very next call
    await client.join(org, owner, bob, "member")
    status, _ = await client.call("POST", "/api/sync/token", topic, token=bob["access_token"])
    assert status == 200


async def test_a_lost_listener_bypasses_the_cache(
    second, client, make_client, http, email, unique
) -> None:
    other = make_client(second.base_url, http)
    carol = await client.sign_in(f"carol-{email}")
    org = f"mcl-{unique}"
    topic = {"topics": [f"org.{org}.runs"]}
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "L"}, token=carol["access_token"])

    async def carol_mints_on_second():
        return await other.call("POST", "/api/sync/token", topic, token=carol["access_token"])

    assert (await carol_mints_on_second())[0] == 200
    cache = second.feed
    assert cache is not None and cache.listening
    pool = second.pool
    assert pool is not None
    # Kill the feed connections of this database (the shared `control` has one too).
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = $1",
        APPLICATION_NAME,
    )
    assert killed >= 1
    for _ in range(300):
        if not cache.listening:
            break
        await asyncio.sleep(0.01)
    # A change nobody is told about (no NOTIFY): only a bypassed cache sees it. The
    # listener waits RECONNECT_S (1 s) before coming back, so this runs while it is down.
    await pool.execute(
        "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2", org, carol["user_id"]
    )
    assert not cache.listening
    assert (await carol_mints_on_second())[0] == 403
    await asyncio.wait_for(cache.connected.wait(), 5.0)  # the listener comes back
    assert (await carol_mints_on_second())[0] == 403


async def test_a_revocation_reaches_other_processes_through_notify(
    second, client, make_client, http, email
) -> None:
    other = make_client(second.base_url, http)
    session = await client.sign_in(email)
    access = session["access_token"]
    assert (await other.call("GET", "/api/me", token=access))[0] == 200
    before = hits("sessions")
    assert (await other.call("GET", "/api/me", token=access))[0] == 200
    assert hits("sessions") == before + 1  # the live session came from the cache

    await client.ok("POST", "/api/auth/logout", token=access)
    assert (await client.call("GET", "/api/me", token=access))[0] == 401  # at once, here

    async def me_on_second():
        return await other.call("GET", "/api/me", token=access)

    assert await wait_for_status(me_on_second, 401) < 1.0
