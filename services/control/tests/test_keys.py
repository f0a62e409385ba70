"""Signing keys: race-safe first generation, encryption at rest, two-phase
rotation with no failed verification, the `keys` CLI, and keys from a file.

Most tests use a database of their own so the key table starts empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from khala_common.db import create_pool
from khala_common.jwt_verify import JwksCache, TokenError, TokenVerifier, http_jwks_fetcher
from khala_common.settings import SettingsError
from khala_control.app import ControlApp, key_cipher, rotate_signing_key
from khala_control.settings import DEV_KEY_ENCRYPTION_KEY, SCHEMA, Settings
from khala_control.usecases.signing import KeyRing, public_jwk

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

        new_kid = await rotate_signing_key(settings, publish_delay_s=0)
        jwks = await client.ok("GET", "/.well-known/jwks.json")
        assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]

        minted = await client.ok("POST", "/api/sync/token", {}, token=session["access_token"])
        assert minted["kid"] == new_kid  # signing switched (refresh interval 0 in tests)
        assert (await client.call("GET", "/api/me", token=session["access_token"]))[0] == 200

        newest = await rotate_signing_key(settings, publish_delay_s=0)
        jwks = await client.ok("GET", "/.well-known/jwks.json")
        assert [k["kid"] for k in jwks["keys"]] == [newest, new_kid]
        statuses = await app.pool.fetch(
            "SELECT kid, status FROM signing_keys WHERE purpose = 'control' ORDER BY created_at"
        )
        assert [r["status"] for r in statuses] == ["retired", "previous", "active"]


class CountingFetcher:
    """An HTTP JWKS fetcher that counts its fetches."""

    def __init__(self, url: str) -> None:
        self.fetch = http_jwks_fetcher(url)
        self.count = 0

    async def __call__(self) -> dict[str, Any]:
        self.count += 1
        return await self.fetch()


def gateway_verifier(
    app: ControlApp, min_refetch_s: float
) -> tuple[TokenVerifier, CountingFetcher]:
    """A verifier like the gateway's: JWKS over HTTP, cached for 5 minutes."""
    fetcher = CountingFetcher(f"{app.base_url}/.well-known/jwks.json")
    cache = JwksCache(fetcher, ttl_s=300.0, min_refetch_interval_s=min_refetch_s)
    return TokenVerifier(cache, issuer=app.issuer, audience="khala-gateway"), fetcher


async def test_rotation_has_no_failed_verification_during_the_switch(
    empty_database: str, control_settings: Settings, make_client
) -> None:
    """Mint and verify continuously (verifiers with cached JWKS) while `keys rotate` runs."""
    settings = dataclasses.replace(control_settings, database_url=empty_database)
    async with ControlApp(settings) as app, aiohttp.ClientSession() as http:
        client = make_client(app.base_url, http)
        access = (await client.sign_in("switch@example.com"))["access_token"]

        async def mint() -> str:
            return str((await client.ok("POST", "/api/sync/token", {}, token=access))["token"])

        before = await mint()  # minted just before the rotation starts
        old_kid = jwt.get_unverified_header(before)["kid"]
        verifier, _ = gateway_verifier(app, min_refetch_s=1.0)
        await verifier.verify(before)  # the verifier now holds a cached JWKS
        idle_verifier, idle_fetcher = gateway_verifier(app, min_refetch_s=1.0)
        await idle_verifier.verify(before)

        published_during_delay: list[list[str]] = []

        async def observing_sleep(seconds: float) -> None:
            jwks = await client.ok("GET", "/.well-known/jwks.json")
            published_during_delay.append([key["kid"] for key in jwks["keys"]])
            await asyncio.sleep(seconds)

        failures: list[str] = []
        kids_seen: set[str] = set()
        stop = asyncio.Event()

        async def mint_and_verify() -> None:
            while not stop.is_set():
                token = await mint()
                kids_seen.add(jwt.get_unverified_header(token)["kid"])
                for candidate in (token, before):
                    try:
                        await verifier.verify(candidate)
                    except TokenError as exc:
                        failures.append(f"{exc.code}: {exc.message}")
                await asyncio.sleep(0.02)

        loop = asyncio.create_task(mint_and_verify())
        pool = await create_pool(empty_database, SCHEMA, max_size=2)
        try:
            keyring = KeyRing(pool, "control", key_cipher(settings))
            new_kid = await keyring.rotate(1.5, sleep=observing_sleep)
            await asyncio.sleep(0.5)  # keep minting with the new key for a while
        finally:
            stop.set()
            await loop
            await pool.close()

        assert failures == []
        assert kids_seen == {old_kid, new_kid}
        # while staged, the new key was published but not signing yet
        assert published_during_delay == [[old_kid, new_kid]]
        jwks = await client.ok("GET", "/.well-known/jwks.json")
        assert [key["kid"] for key in jwks["keys"]] == [new_kid, old_kid]
        after = await mint()
        assert jwt.get_unverified_header(after)["kid"] == new_kid
        # tokens minted before the rotation still verify, against a fresh JWKS too
        fresh, _ = gateway_verifier(app, min_refetch_s=1.0)
        assert (await fresh.verify(before))["jti"]
        # a verifier whose cached JWKS predates the rotation learns the new kid by refetching
        fetches = idle_fetcher.count
        assert (await idle_verifier.verify(after))["jti"]
        assert idle_fetcher.count == fetches + 1


async def test_without_a_publish_delay_a_fresh_cache_would_fail(
    empty_database: str, control_settings: Settings, make_client
) -> None:
    """Why the delay exists: a key that signs at once meets verifiers that may not refetch."""
    settings = dataclasses.replace(control_settings, database_url=empty_database)
    async with ControlApp(settings) as app, aiohttp.ClientSession() as http:
        client = make_client(app.base_url, http)
        access = (await client.sign_in("nodelay@example.com"))["access_token"]
        verifier, _ = gateway_verifier(app, min_refetch_s=5.0)
        await verifier.verify(
            (await client.ok("POST", "/api/sync/token", {}, token=access))["token"]
        )
        await rotate_signing_key(settings, publish_delay_s=0)
        token = (await client.ok("POST", "/api/sync/token", {}, token=access))["token"]
        with pytest.raises(TokenError) as caught:
            await verifier.verify(token)
        assert "unknown kid" in caught.value.message


async def test_interrupted_rotation_resumes_with_the_staged_key(
    empty_database: str, control_settings: Settings
) -> None:
    pool = await create_pool(empty_database, SCHEMA, max_size=2)
    try:
        keyring = KeyRing(pool, "control", key_cipher(control_settings))
        first = await keyring.ensure_active()

        async def crash(_: float) -> None:
            raise RuntimeError("killed while the key was staged")

        with pytest.raises(RuntimeError):
            await keyring.rotate(60.0, sleep=crash)
        statuses = {k.status: k.kid for k in await keyring.list()}
        assert statuses["active"] == first and "next" in statuses
        staged = statuses["next"]
        assert await keyring.rotate(0.0) == staged  # promoted, not a third key
        assert [(k.kid, k.status) for k in await keyring.list()] == [
            (first, "previous"),
            (staged, "active"),
        ]
    finally:
        await pool.close()


def _cli(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "khala_control", *command],
        env=env,
        capture_output=True,
        timeout=60,
    )


def test_cli_migrate_keys_rotate_and_list(empty_database: str, tmp_path: Path) -> None:
    env = {**os.environ, "KHALA_DATABASE_URL": empty_database, "KHALA_LOG_LEVEL": "warning"}
    env.pop("KHALA_CONTROL_SIGNING_KEY_FILE", None)
    for command in (
        ["migrate"],
        ["keys", "rotate", "--publish-delay-s", "0"],
        ["rotate-key", "--publish-delay-s", "0"],  # the old name still works
    ):
        result = _cli(env, *command)
        assert result.returncode == 0, result.stderr.decode()
        assert b'"active_kid"' in result.stdout or command == ["migrate"]
    listing = _cli(env, "keys", "list")
    assert listing.returncode == 0, listing.stderr.decode()
    keys = [json.loads(line) for line in listing.stdout.splitlines() if b'"status"' in line]
    # the first rotation also generated the initial key
    assert [key["status"] for key in keys] == ["retired", "previous", "active"]
    assert all(key["purpose"] == "control" for key in keys)

    bad = _cli({**env, "KHALA_SYNC_TOKEN_TTL_S": "soon"}, "migrate")
    assert bad.returncode == 2
    assert b"KHALA_SYNC_TOKEN_TTL_S" in bad.stderr
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    refused = _cli({**env, "KHALA_CONTROL_SIGNING_KEY_FILE": str(key_file)}, "keys", "rotate")
    assert refused.returncode == 2
    assert b"updating that file" in refused.stderr


def _pem(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *, sec1: bool = False) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if sec1
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, *blocks: bytes) -> None:
    """Replace the file atomically, as a Kubernetes Secret update does."""
    staging = path.with_suffix(".new")
    staging.write_bytes(b"\n".join(blocks))
    os.replace(staging, path)


async def test_keys_from_a_file_sign_and_rotate_by_editing_it(
    control_settings: Settings, make_client, tmp_path: Path
) -> None:
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    old_kid, new_kid = public_jwk(old)["kid"], public_jwk(new)["kid"]
    key_file = tmp_path / "signing.pem"
    _write(key_file, _pem(old))
    settings = dataclasses.replace(control_settings, signing_key_file=str(key_file))
    async with ControlApp(settings) as app, aiohttp.ClientSession() as http:
        client = make_client(app.base_url, http)
        access = (await client.sign_in("file-keys@example.com"))["access_token"]
        assert jwt.get_unverified_header(access)["kid"] == old_kid
        verifier, _ = gateway_verifier(app, min_refetch_s=0.0)

        async def mint_kid() -> str:
            token = (await client.ok("POST", "/api/sync/token", {}, token=access))["token"]
            await verifier.verify(token)
            return str(jwt.get_unverified_header(token)["kid"])

        async def published() -> list[str]:
            return [k["kid"] for k in (await client.ok("GET", "/.well-known/jwks.json"))["keys"]]

        assert await mint_kid() == old_kid and await published() == [old_kid]
        _write(key_file, _pem(old), _pem(new, sec1=True))  # 1: publish the new key
        assert await mint_kid() == old_kid and await published() == [old_kid, new_kid]
        _write(key_file, _pem(new, sec1=True), _pem(old))  # 2: the new key signs
        assert await mint_kid() == new_kid and await published() == [new_kid, old_kid]
        assert (await client.call("GET", "/api/me", token=access))[0] == 200  # old token ok
        _write(key_file, b"garbage")  # a broken update: keep the keys we have
        assert await mint_kid() == new_kid and await published() == [new_kid, old_kid]
        _write(key_file, _pem(new))  # 3: drop the old key
        assert await mint_kid() == new_kid and await published() == [new_kid]
        # nothing was written to Postgres for purpose 'control'
        assert app.pool is not None
        kids = await app.pool.fetch(
            "SELECT kid FROM signing_keys WHERE kid = ANY($1)", [old_kid, new_kid]
        )
        assert kids == []


@pytest.mark.parametrize("content", ["missing", "empty", "rsa", "p384"])
async def test_unusable_key_files_stop_the_start(
    control_settings: Settings, tmp_path: Path, content: str
) -> None:
    key_file = tmp_path / "signing.pem"
    if content == "empty":
        key_file.write_bytes(b"")
    elif content == "rsa":
        key_file.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    elif content == "p384":
        key_file.write_bytes(_pem(ec.generate_private_key(ec.SECP384R1())))
    settings = dataclasses.replace(control_settings, signing_key_file=str(key_file))
    with pytest.raises(SettingsError) as caught:
        await ControlApp(settings).start()
    assert caught.value.name == "KHALA_CONTROL_SIGNING_KEY_FILE"


async def test_jwks_is_served_from_memory_and_publishes_a_staged_key_within_a_second(
    empty_database: str, control_settings: Settings
) -> None:
    pool = await create_pool(empty_database, SCHEMA, max_size=4)
    try:
        now = [1000.0]
        cipher = key_cipher(control_settings)
        serving = KeyRing(pool, "control", cipher, refresh_s=30.0, clock=lambda: now[0])
        first = await serving.ensure_active()
        assert [k["kid"] for k in (await serving.jwks())["keys"]] == [first]

        # Another process stages a key (a rotation waiting out its publish delay).
        async def stop_before_promoting(_: float) -> None:
            raise RuntimeError("still waiting")

        with pytest.raises(RuntimeError):
            await KeyRing(pool, "control", cipher).rotate(10.0, sleep=stop_before_promoting)
        # Within the cache time the document comes from memory, even with Postgres unusable.
        async with pool.acquire() as held, held.transaction():
            await held.execute("LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE")
            cached = await asyncio.wait_for(serving.jwks(), 2.0)
        assert [k["kid"] for k in cached["keys"]] == [first]
        now[0] += 1.0
        documents = await asyncio.gather(*(serving.jwks() for _ in range(20)))
        staged = {k.status: k.kid for k in await serving.list()}["next"]
        assert all({k["kid"] for k in d["keys"]} == {first, staged} for d in documents)
    finally:
        await pool.close()
