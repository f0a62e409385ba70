"""Integration (real HTTP, real Postgres): an org's audit API shows only that org's
entries, even while another org is active at the same time, and only to its owners
and admins."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


async def _entries(client: Any, org: str, token: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    before = None
    while True:
        query = "?limit=500" + (f"&before={before}" if before else "")
        page = await client.ok("GET", f"/api/orgs/{org}/audit{query}", token=token)
        assert page["org_id"] == org
        entries += page["entries"]
        before = page["next_before"]
        if before is None:
            return entries


async def test_an_orgs_audit_shows_only_that_orgs_entries(
    control: Any, client: Any, email: str, unique: str
) -> None:
    owner_a = await client.sign_in(f"a-{email}")
    owner_b = await client.sign_in(f"b-{email}")
    org_a, org_b = f"sca-{unique}", f"scb-{unique}"
    for org, owner in ((org_a, owner_a), (org_b, owner_b)):
        await client.ok(
            "POST", "/api/orgs", {"org_id": org, "name": org}, token=owner["access_token"]
        )
    for owner in (owner_a, owner_b):  # each mints for their own org
        await client.ok("POST", "/api/sync/token", {}, token=owner["access_token"])
    # B is denied A's topics: that denial concerns A (an attempt on A's topics).
    status, _ = await client.call(
        "POST",
        "/api/sync/token",
        {"topics": [f"org.{org_b}.runs", f"org.{org_a}.runs"]},
        token=owner_b["access_token"],
    )
    assert status == 403
    await control.audit.flush()

    seen_a = await _entries(client, org_a, owner_a["access_token"])
    seen_b = await _entries(client, org_b, owner_b["access_token"])
    assert [(e["action"], e["user_id"]) for e in reversed(seen_a)] == [
        ("org.created", owner_a["user_id"]),
        ("sync_token.minted", owner_a["user_id"]),
        ("sync_token.denied", owner_b["user_id"]),
    ]
    assert [(e["action"], e["user_id"]) for e in reversed(seen_b)] == [
        ("org.created", owner_b["user_id"]),
        ("sync_token.minted", owner_b["user_id"]),
    ]
    assert not {e["audit_id"] for e in seen_b} & {
        e["audit_id"] for e in seen_a if e["action"] != "sync_token.denied"
    }
    # Neither owner reads the other org's audit.
    for org, owner in ((org_a, owner_b), (org_b, owner_a)):
        status, body = await client.call(
            "GET", f"/api/orgs/{org}/audit", token=owner["access_token"]
        )
        assert (status, body["error"]["code"]) == (403, "forbidden")
