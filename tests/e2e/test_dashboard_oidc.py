"""Dashboard sign-in through a real OpenID provider: authorization code + PKCE.

The provider is node `oidc-provider` 8.x (tests/e2e/oidc/provider.mjs, its
development login and consent pages), started by this test; control trusts it
(KHALA_OIDC_ISSUER, KHALA_OIDC_AUDIENCE = the dashboard's client id). Headless
Debian Chromium signs in through the provider's pages and lands in the
dashboard as that user, with the live WebSocket up, and creates a run from it
(seen live). A wrong PKCE verifier is refused by the provider, so the test also
shows PKCE is enforced.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .clients_support import FAST_ENV, running_stack

ROOT = Path(__file__).resolve().parents[2]
OIDC = Path(__file__).resolve().parent / "oidc"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
CLIENT_ID = "khala-dashboard"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _devserver():
    spec = importlib.util.spec_from_file_location(
        "khala_web_devserver", ROOT / "clients/web/devserver.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def provider_port() -> int:
    npm = shutil.which("npm")
    assert npm, "npm is missing: make install sets up Node.js"
    if not (OIDC / "node_modules").exists():
        subprocess.run([npm, "ci", "--silent", "--no-audit", "--no-fund"], cwd=OIDC, check=True)
    return _free_port()


@pytest.fixture(scope="module")
async def stack(
    e2e_database: str, amqp_url: str, request: pytest.FixtureRequest, provider_port: int
):
    env = {
        **FAST_ENV,
        "KHALA_OIDC_ISSUER": f"http://127.0.0.1:{provider_port}",
        "KHALA_OIDC_AUDIENCE": CLIENT_ID,
    }
    async with running_stack(e2e_database, amqp_url, request, env) as running:
        yield running


@pytest.fixture(scope="module")
async def dashboard(stack, provider_port: int) -> AsyncIterator[str]:
    runner, base = await _devserver().start(stack.url("control"), stack.url("runtime"))
    proc = await asyncio.create_subprocess_exec(
        "node",
        "provider.mjs",
        str(provider_port),
        f"{base}/",
        cwd=OIDC,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"ready "), line
        issuer = line.decode().split()[1]
        yield f"{base}/?gateway={stack.ws_url}&oidc_issuer={issuer}&oidc_client_id={CLIENT_ID}"
    finally:
        proc.terminate()
        await proc.wait()
        await runner.cleanup()


async def test_sign_in_with_authorization_code_and_pkce(dashboard: str, provider_port: int) -> None:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium"  # noqa: ASYNC240
    from playwright.async_api import async_playwright

    login = f"ada{uuid.uuid4().hex[:6]}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            logs: list[str] = []
            page.on("console", lambda msg: logs.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda exc: logs.append(f"pageerror: {exc}"))
            await page.goto(dashboard)
            await page.click("#signin-sso")
            # The provider's development login page, then its consent page.
            await page.wait_for_url(f"http://127.0.0.1:{provider_port}/**", timeout=20_000)
            await page.fill("input[name=login]", login)
            await page.fill("input[name=password]", "any")
            await page.click("button[type=submit]")
            await page.wait_for_selector("button[type=submit]", timeout=20_000)
            await page.click("button[type=submit]")  # consent
            # Back in the dashboard, signed in as the provider's user.
            await page.wait_for_selector("#org-view:not([hidden])", timeout=30_000)
            await page.wait_for_function(
                f"document.getElementById('whoami').textContent.startsWith('{login}@example.com')",
                timeout=20_000,
            )
            assert (
                "code=" not in page.url and "gateway=" in page.url
            )  # callback params gone, config kept
            await page.fill("#org-id", f"sso-{login}")
            await page.fill("#org-name", "SSO org")
            await page.click("#org-create button")
            try:
                await page.wait_for_function(
                    "document.getElementById('conn-state').dataset.state === 'live'", timeout=30_000
                )
            except Exception:
                banner = await page.inner_text("#banner")
                state = await page.inner_text("#conn-state")
                raise AssertionError(
                    f"not live: {state!r}, banner {banner!r}, logs {logs[-10:]}"
                ) from None
            # The provider's user acts with the access token control issued for it.
            await page.fill("#run-new-title", "run by an SSO user")
            await page.click("#run-create button")
            await page.wait_for_selector(
                "#runs tr[data-run-id] [data-status='created']", timeout=20_000
            )
            await page.wait_for_selector("#run-log li[data-type='run.created']", timeout=20_000)
            assert await page.is_hidden("#banner"), await page.inner_text("#banner")
        finally:
            await browser.close()


async def test_the_provider_refuses_a_code_without_the_right_verifier(
    dashboard: str, provider_port: int
) -> None:
    """PKCE is enforced: the token endpoint refuses a wrong code_verifier."""
    issuer = f"http://127.0.0.1:{provider_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": "not-a-code",
                "redirect_uri": dashboard.split("?")[0],
                "client_id": CLIENT_ID,
                "code_verifier": "x" * 43,
            },
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "invalid_grant"
