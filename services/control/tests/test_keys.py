"""Signing keys: race-safe first generation, encryption at rest, rotation, CLI.

These tests use their own database so the key table starts empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys

import aiohttp
import asyncpg
import jwt
import pytest
from cryptography.fernet import Fernet, MultiFernet

from khala_common.db import create_pool
from khala_control.app import ControlApp, rotate_signing_key
from khala_control.settings import DEV_KEY_ENCRYPTION_KEY, SCHEMA, Settings
from khala_control.usecases.signing import KeyRing

pytestmark = pytest.mark.integration


async def test_concurrent_first_starts_converge_on_one_key(empty_database: str) -> None:
    cipher = MultiFernet([Fernet(DEV_KEY_ENCRYPTION_KEY)])
    pools = [await create_pool(empty_database, SCHEMA, max_size=2) for _ in range(6)]
    try:
        kids = await asyncio.gather(*(KeyRing(p, "control", cipher).ensure_active() for p in pools))
        assert len(set(kids)) == 1
        rows = await pools[0].fetch(
            "SELECT kid, status FROM signing_keys WHERE purpose = 'control'"
        )
        assert [(r["kid"], r["status"]) for r in rows] == [(kids[0], "active")]
    finally:
        for pool in pools:
            await pool.close()


async def test_two_apps_starting_at_once_share_keys(
    empty_database: str, control_settings: Settings, make_client
) -> None:
    settings = dataclasses.replace(control_settings, database_url=empty_database)
    apps = [ControlApp(settings), ControlApp(settings)]
    await asyncio.gather(*(app.start() for app in apps))
    try:
        async with aiohttp.ClientSession() as http:
            jwks = [
                await make_client(app.base_url, http).ok("GET", "/.well-known/jwks.json")
                for app in apps
            ]
            dev = [
                await make_client(app.base_url, http).ok("GET", "/dev-idp/jwks.json")
                for app in apps
            ]
        assert jwks[0] == jwks[1] and len(jwks[0]["keys"]) == 1
        assert dev[0] == dev[1] and len(dev[0]["keys"]) == 1
        assert dev[0]["keys"][0]["kid"] != jwks[0]["keys"][0]["kid"]
    finally:
        await asyncio.gather(*(app.stop() for app in apps))


async def test_private_keys_are_encrypted_at_rest(control) -> None:
    rows = await control.pool.fetch(
        "SELECT kid, private_key_enc, public_jwk::text AS jwk FROM signing_keys"
    )
    assert rows
    for row in rows:
        blob = bytes(row["private_key_enc"])
        assert b"PRIVATE KEY" not in blob
        assert (
            Fernet(DEV_KEY_ENCRYPTION_KEY).decrypt(blob).startswith(b"-----BEGIN PRIVATE KEY-----")
        )
        assert '"d"' not in row["jwk"]  # the published JWK has no private part


async def test_rotation_keeps_the_previous_key_published(
    empty_database: str, control_settings: Settings, make_client
) -> None:
    settings = dataclasses.replace(control_settings, database_url=empty_database)
    async with ControlApp(settings) as app, aiohttp.ClientSession() as http:
        client = make_client(app.base_url, http)
        session = await client.sign_in("rotate@example.com")
        old_kid = jwt.get_unverified_header(session["access_token"])["kid"]

        new_kid = await rotate_signing_key(settings)
        jwks = await client.ok("GET", "/.well-known/jwks.json")
        assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]

        minted = await client.ok("POST", "/api/sync/token", {}, token=session["access_token"])
        assert minted["kid"] == new_kid  # signing switched (refresh interval 0 in tests)
        assert (await client.call("GET", "/api/me", token=session["access_token"]))[0] == 200

        newest = await rotate_signing_key(settings)
        jwks = await client.ok("GET", "/.well-known/jwks.json")
        assert [k["kid"] for k in jwks["keys"]] == [newest, new_kid]
        statuses = await app.pool.fetch(
            "SELECT kid, status FROM signing_keys WHERE purpose = 'control' ORDER BY created_at"
        )
        assert [r["status"] for r in statuses] == ["retired", "previous", "active"]


def test_cli_migrate_and_rotate_key(empty_database: str) -> None:
    env = {**os.environ, "KHALA_DATABASE_URL": empty_database, "KHALA_LOG_LEVEL": "warning"}
    for command in (["migrate"], ["rotate-key"], ["rotate-key"]):
        result = subprocess.run(
            [sys.executable, "-m", "khala_control", *command],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode()
    bad = subprocess.run(
        [sys.executable, "-m", "khala_control", "migrate"],
        env={**env, "KHALA_SYNC_TOKEN_TTL_S": "soon"},
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert b"KHALA_SYNC_TOKEN_TTL_S" in bad.stderr

    async def statuses() -> list[str]:
        conn = await asyncpg.connect(empty_database)
        try:
            rows = await conn.fetch("SELECT status FROM control.signing_keys ORDER BY created_at")
            return [r["status"] for r in rows]
        finally:
            await conn.close()

    # the first rotate-key also generates the initial key
    assert asyncio.run(statuses()) == ["retired", "previous", "active"]
