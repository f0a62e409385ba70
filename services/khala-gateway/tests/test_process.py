"""The console entry point: settings errors, `migrate`, and `serve` with a SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp
import pytest
from gateway_testkit import ISSUER, SERVICE_TOKEN, Client, Issuer

from khala_common.topology import Topology
from khala_gateway.__main__ import main


def test_invalid_setting_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KHALA_GATEWAY_HTTP_PORT", "eighty")
    assert main(["serve"]) == 2
    assert "KHALA_GATEWAY_HTTP_PORT" in capsys.readouterr().err


def test_migrate_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KHALA_GATEWAY_HTTP_PORT", raising=False)
    assert main(["migrate"]) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
async def test_serve_drains_on_sigterm(
    khala_dsn: str, amqp_url: str, topology: Topology, issuer: Issuer, unique: str
) -> None:
    http_port = _free_port()
    env = dict(
        os.environ,
        KHALA_DATABASE_URL=khala_dsn,
        KHALA_AMQP_URL=amqp_url,
        KHALA_AMQP_PREFIX=topology.prefix,
        KHALA_CONTROL_URL=issuer.url,
        KHALA_CONTROL_GRPC_TARGET=issuer.grpc_target,
        KHALA_SERVICE_TOKEN=SERVICE_TOKEN,
        KHALA_TOKEN_ISSUER=ISSUER,
        KHALA_GATEWAY_HTTP_PORT=str(http_port),
        KHALA_GATEWAY_GRPC_PORT=str(_free_port()),
        KHALA_GATEWAY_DRAIN_RETRY_MS="100",
        KHALA_GATEWAY_DRAIN_JITTER_MS="100",
        KHALA_LOG_LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "khala_gateway",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{http_port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("gateway never became ready")
            client = Client(
                await http.ws_connect(f"{base}/v1/ws", protocols=("khala.v1+proto",)), False
            )
            await client.hello(issuer.mint([f"org.{unique}.*"]))
            proc.send_signal(signal.SIGTERM)
            reconnect = await client.expect("reconnect")
            assert reconnect.reason == "drain" and 100 <= reconnect.retry_after_ms <= 200
            assert await client.expect_close() == 1012
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
