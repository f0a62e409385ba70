"""The audit log: what is recorded, `GET /api/orgs/{org}/audit` (owners and
admins, paginated), and the buffered writer's no-silent-loss behaviour."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import aiohttp
import pytest

from khala_common.db import create_pool
from khala_control.app import ControlApp
from khala_control.metrics import AUDIT_LOST
from khala_control.settings import SCHEMA
from khala_control.storage.audit import AuditEntry
from khala_control.usecases.audit_writer import AuditWriter

pytestmark = pytest.mark.integration


async def read_all(client, org: str, token: str, limit: int) -> list[dict]:
    entries: list[dict] = []
    before = None
    while True:
        query = f"?limit={limit}" + (f"&before={before}" if before else "")
        page = await client.ok("GET", f"/api/orgs/{org}/audit{query}", token=token)
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        before = page["next_before"]
        if before is None:
            return entries


async def test_org_audit_for_owners_and_admins(control, client, email, unique) -> None:
    owner = await client.sign_in(f"owner-{email}")
    admin = await client.sign_in(f"admin-{email}")
    member = await client.sign_in(f"member-{email}")
    outsider = await client.sign_in(f"outsider-{email}")
    org, other_org = f"aud-{unique}", f"aud2-{unique}"
    for name, actor in ((org, owner), (other_org, outsider)):
        await client.ok(
            "POST", "/api/orgs", {"org_id": name, "name": "A"}, token=actor["access_token"]
        )
    for who, role in ((admin, "admin"), (member, "member")):
        await client.join(org, owner, who, role)
    await client.ok("POST", "/api/sync/token", {}, token=member["access_token"])
    await client.ok("POST", "/api/sync/token", {}, token=outsider["access_token"])  # other org
    status, _ = await client.call(
        "POST", "/api/sync/token", {"topics": [f"org.{org}.runs"]}, token=outsider["access_token"]
    )
    assert status == 403
    status, _ = await client.call(  # a member may not manage members
        "PUT",
        f"/api/orgs/{org}/members/{outsider['user_id']}",
        {"role": "viewer"},
        token=member["access_token"],
    )
    assert status == 403
    await control.audit.flush()

    entries = await read_all(client, org, owner["access_token"], limit=2)
    assert [e["audit_id"] for e in entries] == sorted(
        (e["audit_id"] for e in entries), reverse=True
    )
    actions = [(e["action"], e["user_id"]) for e in reversed(entries)]
    assert actions == [
        ("org.created", owner["user_id"]),
        ("invitation.created", owner["user_id"]),
        ("invitation.accepted", admin["user_id"]),
        ("invitation.created", owner["user_id"]),
        ("invitation.accepted", member["user_id"]),
        ("sync_token.minted", member["user_id"]),
        ("sync_token.denied", outsider["user_id"]),
        ("membership.denied", member["user_id"]),
    ]
    minted = next(e for e in entries if e["action"] == "sync_token.minted")
    assert minted["detail"]["scope"][0] == f"org.{org}.runs" and minted["detail"]["jti"]
    assert minted["at"].endswith("Z") and minted["at_ms"] > 0
    denied = next(e for e in entries if e["action"] == "sync_token.denied")
    assert denied["detail"]["code"] == "forbidden_topic"
    assert denied["detail"]["topic"] == f"org.{org}.runs"

    # an admin reads the same log; one page with a larger limit
    page = await client.ok("GET", f"/api/orgs/{org}/audit?limit=100", token=admin["access_token"])
    assert [e["audit_id"] for e in page["entries"]] == [e["audit_id"] for e in entries]
    assert page["next_before"] is None
    # the other org's log has the outsider's own mint, nothing of this org
    theirs = await read_all(client, other_org, outsider["access_token"], limit=50)
    assert [e["action"] for e in reversed(theirs)] == ["org.created", "sync_token.minted"]


async def test_org_audit_refusals(control, client, email, unique) -> None:
    owner = await client.sign_in(f"owner-{email}")
    member = await client.sign_in(f"member-{email}")
    viewer = await client.sign_in(f"viewer-{email}")
    stranger = await client.sign_in(f"stranger-{email}")
    org = f"aur-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "R"}, token=owner["access_token"])
    for who, role in ((member, "member"), (viewer, "viewer")):
        await client.join(org, owner, who, role)
    for who in (member, viewer, stranger):
        status, body = await client.call("GET", f"/api/orgs/{org}/audit", token=who["access_token"])
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await client.call(
        "GET", f"/api/orgs/none-{unique}/audit", token=owner["access_token"]
    )
    assert (status, body["error"]["code"]) == (404, "org_not_found")
    for query in ("limit=0", "limit=501", "limit=ten", "before=-1", "before=1e3"):
        status, body = await client.call(
            "GET", f"/api/orgs/{org}/audit?{query}", token=owner["access_token"]
        )
        assert (status, body["error"]["code"]) == (400, "bad_request"), query
    status, body = await client.call("GET", f"/api/orgs/{org}/audit")
    assert (status, body["error"]["code"]) == (401, "unauthorized")

    await control.audit.flush()
    entries = await read_all(client, org, owner["access_token"], limit=100)
    refused = [e["user_id"] for e in entries if e["action"] == "audit.denied"]
    assert sorted(refused) == sorted(w["user_id"] for w in (member, viewer, stranger))


async def test_sign_in_and_refresh_refusals_are_audited(control, client, unique) -> None:
    status, _ = await client.call(
        "POST",
        "/api/auth/session",
        {"id_token": f"junk-{unique}", "device_id": "d", "surface": "web"},
    )
    assert status == 401
    status, _ = await client.call("POST", "/api/auth/refresh", {"refresh_token": f"rt_{unique}"})
    assert status == 401
    await control.audit.flush()
    rows = await control.pool.fetch(
        "SELECT action, client_ip, detail->>'code' AS code FROM audit_log "
        "WHERE action IN ('session.denied', 'refresh_token.denied') AND at > now() - interval '1 minute' "
        "ORDER BY audit_id DESC LIMIT 2"
    )
    assert [(r["action"], r["code"], r["client_ip"]) for r in reversed(rows)] == [
        ("session.denied", "unauthorized", "127.0.0.1"),
        ("refresh_token.denied", "unauthorized", "127.0.0.1"),
    ]


def entry(action: str, org: str) -> AuditEntry:
    return AuditEntry(action, datetime.now(UTC), user_id="usr_w", org_ids=(org, org))


async def test_writer_keeps_a_failed_batch_and_retries_it(empty_database: str) -> None:
    pool = await create_pool(empty_database, SCHEMA)
    try:
        writer = AuditWriter(pool, flush_interval_s=60)
        for i in range(3):
            await writer.submit(entry(f"test.{i}", "w-org"))
        await pool.execute("ALTER TABLE audit_log RENAME TO audit_log_away")
        with pytest.raises(Exception):  # noqa: B017 - any Postgres error
            await writer.flush()
        assert writer.pending == 3
        await pool.execute("ALTER TABLE audit_log_away RENAME TO audit_log")
        await writer.submit(entry("test.3", "w-org"))
        assert await writer.flush() == 4
        rows = await pool.fetch("SELECT action FROM audit_log ORDER BY audit_id")
        assert [r["action"] for r in rows] == ["test.0", "test.1", "test.2", "test.3"]
        links = await pool.fetchval("SELECT count(*) FROM audit_log_orgs WHERE org_id = 'w-org'")
        assert links == 4  # duplicate org ids in one entry are linked once
    finally:
        await pool.close()


async def test_writer_logs_what_it_cannot_write_at_shutdown(empty_database: str) -> None:
    pool = await create_pool(empty_database, SCHEMA)
    writer = AuditWriter(pool, flush_interval_s=60)
    await writer.submit(entry("test.lost", "l-org"))
    await pool.close()
    before = AUDIT_LOST._value.get()
    await writer.close(timeout_s=0.3)
    assert writer.pending == 0
    assert AUDIT_LOST._value.get() == before + 1


async def test_synchronous_mode_writes_before_answering(empty_database: str) -> None:
    pool = await create_pool(empty_database, SCHEMA)
    try:
        writer = AuditWriter(pool, flush_interval_s=0)
        await writer.submit(entry("test.sync", "s-org"))
        assert writer.pending == 0
        assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'test.sync'") == 1
    finally:
        await pool.close()


async def test_stopping_the_app_flushes_buffered_entries(
    control_settings, make_client, email
) -> None:
    settings = dataclasses.replace(control_settings, audit_flush_ms=600_000)
    app = ControlApp(settings)
    await app.start()
    try:
        async with aiohttp.ClientSession() as http:
            client = make_client(app.base_url, http)
            session = await client.sign_in(email)
            minted = await client.ok("POST", "/api/sync/token", {}, token=session["access_token"])
        assert app.audit is not None and app.audit.pending == 1
        pool = app.pool
    finally:
        await app.stop()
    assert pool is not None
    other = await create_pool(settings.database_url, SCHEMA, max_size=1)
    try:
        jtis = await other.fetch(
            "SELECT detail->>'jti' AS jti FROM audit_log WHERE session_id = $1 "
            "AND action = 'sync_token.minted'",
            session["session_id"],
        )
    finally:
        await other.close()
    import jwt

    assert [r["jti"] for r in jtis] == [
        jwt.decode(minted["token"], options={"verify_signature": False})["jti"]
    ]
