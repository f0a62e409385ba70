"""A Postgres outage answers 503 `unavailable` with Retry-After, never 500, and
the runtime serves again once Postgres is back. The outage is real: the runtime
reaches Postgres through a TCP relay the test cuts (every connection reset, new
ones refused) and then restores."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from khala_common.testing import TcpRelay
from khala_runtime.app import start

pytestmark = pytest.mark.integration


Relay = TcpRelay


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_postgres_outage_is_503_with_retry_after_then_recovers(
    migrated: str, control: Any, settings_for: Any, identity: Any, unique: str
) -> None:
    parts = urlsplit(migrated)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.open()
    _, _, url, target = control
    runtime = await start(
        settings_for(url, target, KHALA_DATABASE_URL=_through(migrated, relay.port))
    )
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    base = f"http://127.0.0.1:{runtime.http_port}"
    headers = {"Authorization": f"Bearer {token}"}
    append = {"events": [{"type": "run.started", "payload": {}, "idempotency_key": f"{unique}-s"}]}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(
                f"{base}/api/v1/runs", json={"org_id": org, "run_id": run_id}
            ) as r:
                assert r.status == 201, await r.text()
            await relay.cut()
            statuses = []
            for _ in range(3):  # pooled connections reset, then reconnects refused
                async with http.post(f"{base}/api/v1/runs/{run_id}/events", json=append) as r:
                    body = await r.json()
                    statuses.append(r.status)
                    assert r.status == 503, body
                    assert body["error"]["code"] == "unavailable"
                    assert r.headers["Retry-After"].isdigit()
            async with aiohttp.ClientSession() as probe:
                async with probe.get(f"{base}/readyz") as ready:
                    assert ready.status == 503  # Postgres is what runtime cannot serve without
                async with probe.get(f"{base}/healthz") as live:
                    assert live.status == 200  # liveness never depends on a dependency
            await relay.open()  # Postgres is back (same port)
            async with http.post(f"{base}/api/v1/runs/{run_id}/events", json=append) as r:
                assert r.status == 201, await r.text()
    finally:
        await runtime.stop()
        await relay.cut()
