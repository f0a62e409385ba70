"""`python -m khala_control serve` as a process: ephemeral ports, issuer = bound URL, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from khala_common.topology import Topology

pytestmark = pytest.mark.integration


async def test_serve_process_signs_in_and_stops_on_sigterm(
    migrated_database_url: str, amqp_url: str, topology: Topology, make_client, http, email
) -> None:
    env = {
        **os.environ,
        "KHALA_DATABASE_URL": migrated_database_url,
        "KHALA_AMQP_URL": amqp_url,
        "KHALA_AMQP_PREFIX": topology.prefix,
        "KHALA_CONTROL_HTTP_PORT": "0",
        "KHALA_CONTROL_GRPC_PORT": "0",
        "KHALA_DEV_IDP_ENABLED": "true",
    }
    for name in ("KHALA_TOKEN_ISSUER", "KHALA_CONTROL_URL"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "khala_control", "serve", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    logs: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(30):
            while not any(entry.get("msg") == "control started" for entry in logs):
                line = await process.stdout.readline()
                assert line, f"process exited early: {logs}"
                logs.append(json.loads(line))
        started = next(entry for entry in logs if entry.get("msg") == "control started")
        base_url = f"http://127.0.0.1:{started['http_port']}"
        assert started["issuer"] == base_url

        client = make_client(base_url, http)
        assert await client.ok("GET", "/readyz") == {"status": "ready"}
        session = await client.sign_in(email)
        assert (await client.ok("GET", "/api/me", token=session["access_token"]))["user"][
            "email"
        ] == email
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
    assert await process.wait() == 0
    assert any(
        json.loads(line).get("msg") == "control stopped" for line in rest.splitlines() if line
    )
