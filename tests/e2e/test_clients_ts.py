"""The TypeScript SDK (clients/ts) against the real stack: Node and Debian Chromium.

- Node: `clients/ts/test/live.test.mjs` (live frames on both subprotocols, restart
  from a file cursor store with no duplicate and no gap, stale-cursor resets,
  RefreshAuth on the same socket), run with the stack's URLs.
- Chromium (/usr/bin/chromium through Playwright, as tests/e2e/test_dashboard.py):
  the SDK in a page keeps its cursor in IndexedDB; after a reload it resumes from
  there, so the page applies every seq exactly once across the reload.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from khala_client import KhalaApi

ROOT = Path(__file__).resolve().parents[2]
TS = ROOT / "clients" / "ts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def built() -> Path:
    """clients/ts installed (npm ci) and built (tsc), as `make test-ts` does."""
    npm = shutil.which("npm")
    assert npm, "npm is missing: make install sets up Node.js"
    if not (TS / "node_modules").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS, check=True)
    subprocess.run([npm, "run", "--silent", "build"], cwd=TS, check=True)
    return TS / "dist"


async def test_node_sdk_against_the_live_stack(stack, built: Path) -> None:
    env = {
        **os.environ,
        "KHALA_TS_CONTROL_URL": stack.url("control"),
        "KHALA_TS_RUNTIME_URL": stack.url("runtime"),
        "KHALA_TS_GATEWAY_URL": stack.ws_url,
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--no-warnings",
        "--test",
        "--test-timeout=60000",
        "test/live.test.mjs",
        cwd=TS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    assert "# fail 0" in text and "# skipped 0" in text and "# pass 5" in text, text[-2000:]


@pytest.fixture
async def static_ts(built: Path) -> AsyncIterator[str]:
    """clients/ts served over HTTP (the page, dist/ and node_modules/)."""
    app = web.Application()
    app.router.add_static("/", TS, show_index=False)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("protocol", ["proto", "json"])
async def test_chromium_reload_resumes_from_indexeddb(stack, static_ts: str, protocol: str) -> None:
    missing = f"{CHROMIUM} is missing: apt-get install chromium (make install does)"
    assert CHROMIUM.is_file(), missing  # noqa: ASYNC240
    from playwright.async_api import async_playwright

    tag = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as http:
        api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        await api.sign_in_dev(f"ts-{tag}@example.com", "TS", device_id=f"ts-{tag}")
        org = f"ts-{tag}"
        await api.create_org(org, org)
        run_id = f"run-{tag}"
        await api.create_run(org, run_id)
        topic = f"org.{org}.run.{run_id}"

        async def append(*texts: str) -> None:
            await api.append_events(
                run_id, [{"type": "run.output", "payload": {"text": t}} for t in texts]
            )

        await api.append_events(run_id, [{"type": "run.started"}])  # seqs 1 (run.created), 2
        await append("1", "2", "3")  # seqs 3..5
        url = f"{static_ts}/test/browser/resume.html?topic={topic}&gateway={stack.ws_url}&protocol={protocol}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context()).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))

                async def mint() -> dict[str, object]:
                    return dict(await api.sync_token([topic]))

                await page.expose_function("mintToken", mint)
                await page.goto(url)
                await page.wait_for_function(
                    "window.applied && window.applied.length >= 5", timeout=30_000
                )
                await page.evaluate("khalaIdle()")
                assert await page.evaluate("khalaCursor()") == "5"

                await page.reload()
                await page.wait_for_function("window.started === true", timeout=30_000)
                await page.wait_for_function(
                    "window.updates.some(u => u.type === 'subscribed')", timeout=30_000
                )
                await append("4", "5")  # seqs 6, 7
                await page.wait_for_function("window.applied.length >= 7", timeout=30_000)
                await asyncio.sleep(0.5)  # a duplicate would show up here
                applied = await page.evaluate("window.applied")
                updates = await page.evaluate("window.updates")
                assert applied == [str(s) for s in range(1, 8)], applied
                subscribed = [u for u in updates if u["type"] == "subscribed"]
                assert subscribed and subscribed[0]["resumed"] is True, json.dumps(updates)
                assert not [u for u in updates if u["type"] in ("reset", "error")], json.dumps(
                    updates
                )
                assert not errors, errors
            finally:
                await browser.close()
