"""The operator dashboard end to end: headless Chromium (Debian's /usr/bin/chromium)
driven by Playwright, against the four real services.

The page is served by clients/web/devserver.py (static files + /api proxies to
control and runtime, as control will serve it); its WebSocket goes to the
gateway. A user signs in through the dev identity provider, creates an org,
sees workers (heartbeat, in_sync) and runs (status), opens a run's live log,
and the log survives two gateway restarts (SIGTERM drain, then SIGKILL) while
lines are appended: every line appears exactly once, in order.
Screenshots go to test-artifacts/dashboard/.

Needs the `playwright` Python package (a dev dependency; no browser download:
it drives the system Chromium, which `make install` installs on Debian).
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from khala_client import ApiError, KhalaApi

from .clients_support import (
    ARTIFACTS,
    FAST_ENV,
    ROOT,
    LineWriter,
    append_lines,
    line_text,
    restart_gateway,
    running_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ARTIFACTS / "dashboard"
assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (make install does)"

from playwright.async_api import Page, async_playwright  # noqa: E402


def _devserver():
    spec = importlib.util.spec_from_file_location(
        "khala_web_devserver", ROOT / "clients/web/devserver.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
async def stack(
    e2e_database: str, amqp_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[object]:
    async with running_stack(e2e_database, amqp_url, request, FAST_ENV) as running:
        yield running


@pytest.fixture(scope="module")
async def dashboard_url(stack) -> AsyncIterator[str]:
    runner, url = await _devserver().start(stack.url("control"), stack.url("runtime"))
    yield f"{url}/?gateway={stack.ws_url}"
    await runner.cleanup()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            yield page
        finally:
            await browser.close()
        # A refusal the test forces (403) is logged by Chromium as a failed load.
        assert not [e for e in errors if "WebSocket" not in e and "status of 403" not in e], errors


async def _shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def _sign_in_and_create_org(page: Page, url: str, email: str, org: str) -> None:
    await page.goto(url)
    await page.fill("#signin-email", email)
    await page.fill("#signin-name", "Operator")
    await page.click("#signin-form button")
    await page.wait_for_selector("#org-view:not([hidden])")
    await page.fill("#org-id", org)
    await page.fill("#org-name", "Dashboard org")
    await page.click("#org-create button")
    await page.wait_for_selector("#org-panels:not([hidden])")
    await page.wait_for_function(
        "document.getElementById('conn-state').dataset.state === 'live'", timeout=20_000
    )


async def _connections(page: Page) -> int:
    return int(await page.inner_text("#conn-count"))


async def _wait_reconnected(page: Page, at_least: int) -> None:
    await page.wait_for_function(
        f"Number(document.getElementById('conn-count').textContent) >= {at_least}"
        " && document.getElementById('conn-state').dataset.state === 'live'",
        timeout=60_000,
    )


async def test_dashboard_live_workers_runs_and_log_across_gateway_restarts(
    stack, dashboard_url: str, page: Page
) -> None:
    tag = uuid.uuid4().hex[:8]
    email, org = f"operator-{tag}@example.com", f"org-{tag}"
    await _sign_in_and_create_org(page, dashboard_url, email, org)
    await _shot(page, "01-signed-in-empty-org")

    async with aiohttp.ClientSession() as http:
        api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        await api.sign_in_dev(email, "Operator", device_id=f"py-{tag}")  # the same user as the page
        await api.create_worker(org, "worker-alpha")
        await api.heartbeat("worker-alpha")
        await api.worker_events("worker-alpha", [{"type": "worker.started", "payload": {}}])
        await api.create_worker(org, "worker-beta")  # never sends a heartbeat
        run_id = f"run-{tag}"
        await api.create_run(org, run_id, title="dashboard run")
        await api.append_events(run_id, [{"type": "run.started", "payload": {}}])
        await append_lines(api, run_id, 0, 5, batch=5, pause_s=0)

        alpha = "tr[data-worker-id='worker-alpha']"
        await page.wait_for_selector(f"{alpha} [data-status='running']", timeout=20_000)
        await page.wait_for_selector(f"{alpha} [data-heartbeat='fresh']")
        await page.wait_for_selector(f"{alpha} [data-projection='in_sync']", timeout=20_000)
        await page.wait_for_selector("tr[data-worker-id='worker-beta'] [data-heartbeat='missing']")
        row = f"tr[data-run-id='{run_id}']"
        await page.wait_for_selector(f"{row} [data-status='running']", timeout=20_000)
        await page.wait_for_selector(f"{row} [data-projection='in_sync']", timeout=20_000)
        await _shot(page, "02-workers-and-runs")

        await page.click(row)
        await page.wait_for_function(
            "document.querySelectorAll('#run-log li').length === 7", timeout=20_000
        )
        await _shot(page, "03-run-log")

        # Lines keep coming while the gateway is restarted twice.
        writer = LineWriter(api, run_id, start=5, batch=2, pause_s=0.05)
        base = await _connections(page)
        await asyncio.sleep(0.5)
        await restart_gateway(stack, signal.SIGTERM)  # drain: Reconnect{retry_after_ms}, close 1012
        await _wait_reconnected(page, base + 1)
        await _shot(page, "04-after-drain-restart")
        await asyncio.sleep(0.5)
        await restart_gateway(stack, signal.SIGKILL)  # vanishes: 1006, backoff
        await _wait_reconnected(page, base + 2)
        written = await writer.finish()
        head = 2 + written
        await page.wait_for_function(
            f"document.querySelectorAll('#run-log li').length >= {head}"
            f" && document.querySelector('#run-log li:last-child').dataset.seq === '{head}'",
            timeout=60_000,
        )
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive now
        lines = await page.eval_on_selector_all(
            "#run-log li",
            "items => items.map(li => [Number(li.dataset.seq), li.dataset.type, li.querySelector('.text').textContent])",
        )
        seqs = [seq for seq, _, _ in lines]
        assert seqs == list(range(1, head + 1)), f"lost or repeated lines: {seqs}"
        assert [t for _, t, _ in lines[:2]] == ["run.created", "run.started"]
        assert [text for _, _, text in lines[2:]] == [line_text(i) for i in range(written)]
        await page.evaluate("document.getElementById('run-log').scrollTop = 1e9")
        await _shot(page, "05-log-after-two-gateway-restarts")

        # Status changes arrive live too.
        await api.append_events(run_id, [{"type": "run.completed", "payload": {}}])
        await api.stop_worker("worker-alpha")
        await page.wait_for_selector(f"{row} [data-status='succeeded']", timeout=20_000)
        await page.wait_for_selector(f"{alpha} [data-status='stopped']", timeout=20_000)
        await page.wait_for_selector(
            f"#run-log li[data-seq='{head + 1}'][data-type='run.completed']"
        )
        stats = await page.evaluate("window.khalaClient.stats")
        assert stats["connections"] >= 3
        assert stats["duplicates"] == 0 and stats["gaps"] == 0, stats
        await _shot(page, "06-completed-and-stopped")


# -- actions by role, through control (which serves the page and proxies runtime) --


@pytest.fixture(scope="module")
def control_dashboard_url(stack) -> str:
    """The dashboard as control serves it: its API calls go to control, runtime's
    through control's /api/v1 proxy."""
    return f"{stack.url('control')}/dashboard/?gateway={stack.ws_url}"


async def _banner(page: Page) -> tuple[str, str]:
    await page.wait_for_selector("#banner:not([hidden])", timeout=20_000)
    code = await page.eval_on_selector("#banner", "b => b.dataset.code")
    return await page.inner_text("#banner"), code


async def _notice(page: Page, text: str) -> None:
    await page.wait_for_function(
        f"document.getElementById('notice').textContent.includes({text!r})", timeout=20_000
    )


async def _force_click(page: Page, selector: str) -> None:
    """Click a disabled button anyway, as someone could from devtools (in one step:
    a re-render in between would disable it again)."""
    await page.eval_on_selector(selector, "b => { b.disabled = false; b.click(); }")


async def test_owner_acts_from_the_dashboard(stack, control_dashboard_url: str, page: Page) -> None:
    tag = uuid.uuid4().hex[:8]
    email, org = f"owner-{tag}@example.com", f"org-{tag}"
    await _sign_in_and_create_org(page, control_dashboard_url, email, org)
    assert await page.inner_text("#org-role") == "owner"

    # Create a run, append to it, see it arrive live.
    await page.fill("#run-new-title", "made in the dashboard")
    await page.click("#run-create button")
    await _notice(page, "created run ")
    await page.wait_for_selector("#run-view:not([hidden])")
    run_row = await page.wait_for_selector("#runs tr[data-run-id]", timeout=20_000)
    assert run_row is not None
    run_id = await run_row.get_attribute("data-run-id")
    assert run_id
    row = f"tr[data-run-id='{run_id}']"
    await page.wait_for_selector(f"{row} [data-status='created']", timeout=20_000)
    await page.select_option("#append-type", "run.started")
    await page.click("#append-form button")
    await page.wait_for_selector(f"{row} [data-status='running']", timeout=20_000)
    await page.select_option("#append-type", "run.output")
    await page.fill("#append-text", "hello from the dashboard")
    await page.click("#append-form button")
    await page.wait_for_selector(
        "#run-log li[data-type='run.output'] .text:text-is('hello from the dashboard')",
        timeout=20_000,
    )
    await _shot(page, "10-owner-appended")

    # Stop it: the status changes live and the run's actions are then disabled.
    await page.click("#run-stop")
    await page.wait_for_selector(f"{row} [data-status='canceled']", timeout=20_000)
    await page.wait_for_selector("#run-log li[data-type='run.canceled']", timeout=20_000)
    await page.wait_for_selector(f"{row} [data-projection='in_sync']", timeout=20_000)
    assert await page.is_disabled("#run-stop")
    assert await page.is_disabled("#append-form button")

    async with aiohttp.ClientSession() as http:
        api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        await api.sign_in_dev(email, "Operator", device_id=f"py-{tag}")  # another device
        run = await api.get_run(run_id)
        assert run["status"] == "canceled" and run["title"] == "made in the dashboard"
        events = (await api.read_events(run_id))["events"]
        assert [e["type"] for e in events] == [
            "run.created",
            "run.started",
            "run.output",
            "run.canceled",
        ]
        assert events[2]["payload"] == {"text": "hello from the dashboard"}

        # Request work from a worker, stop it, resume it.
        worker_id = f"worker-{tag}"
        await api.create_worker(org, worker_id)
        await api.heartbeat(worker_id)
        worker = f"tr[data-worker-id='{worker_id}']"
        await page.wait_for_selector(f"{worker} button[data-action='request']", timeout=20_000)
        await page.click(f"{worker} button[data-action='request']")
        await page.wait_for_selector(f"{worker} td.requests:text-is('1')", timeout=20_000)
        types = [e["type"] for e in (await api.read_worker_events(worker_id))["events"]]
        assert types[-1] == "worker.request.received"
        await page.click(f"{worker} button[data-action='stop']")
        await page.wait_for_selector(f"{worker} [data-status='stopped']", timeout=20_000)
        assert (await api.get_worker(worker_id))["status"] == "stopped"
        assert await page.is_disabled(f"{worker} button[data-action='request']")
        await page.click(f"{worker} button[data-action='resume']")
        await page.wait_for_selector(f"{worker} [data-status='running']", timeout=20_000)
        await _shot(page, "11-owner-worker-actions")

        # Sign out the other device: its token then fails.
        await page.click("#sessions-refresh")
        other = f"#sessions tr[data-device-id='py-{tag}']"
        await page.wait_for_selector(other, timeout=20_000)
        assert await page.is_disabled("#sessions tr[data-current='true'] button")
        await page.click(f"{other} button[data-action='revoke']")
        await _notice(page, f"signed out device py-{tag}")
        await page.wait_for_selector(other, state="detached", timeout=20_000)
        with pytest.raises(ApiError) as refused:
            await api.me()
        assert refused.value.status == 401, refused.value
        assert await page.is_hidden("#banner")
        await _shot(page, "12-owner-revoked-device")


async def test_a_viewer_sees_actions_disabled_and_a_forced_one_refused(
    stack, control_dashboard_url: str, page: Page
) -> None:
    tag = uuid.uuid4().hex[:8]
    org, viewer_email = f"org-{tag}", f"viewer-{tag}@example.com"
    async with aiohttp.ClientSession() as http:
        owner = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        await owner.sign_in_dev(f"owner-{tag}@example.com", "Owner", device_id=f"own-{tag}")
        await owner.create_org(org, "Viewer's org")
        viewer = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        await viewer.sign_in_dev(viewer_email, "Viewer", device_id=f"view-{tag}")
        assert owner.session is not None and viewer.session is not None
        invitation = await owner.invite(org, "viewer", user_id=viewer.session.user_id)
        joined = await viewer.accept_invitation(invitation["invitation_id"])
        assert joined["role"] == "viewer", joined
        run_id = f"run-{tag}"
        await owner.create_run(org, run_id, title="watched run")
        await owner.append_events(run_id, [{"type": "run.started", "payload": {}}])
        worker_id = f"worker-{tag}"
        await owner.create_worker(org, worker_id)

        await page.goto(control_dashboard_url)
        await page.fill("#signin-email", viewer_email)
        await page.click("#signin-form button")
        await page.wait_for_selector("#org-panels:not([hidden])", timeout=20_000)
        await page.wait_for_function(
            "document.getElementById('conn-state').dataset.state === 'live'", timeout=20_000
        )
        assert await page.inner_text("#org-role") == "viewer"
        row = f"tr[data-run-id='{run_id}']"
        await page.wait_for_selector(f"{row} [data-status='running']", timeout=20_000)
        worker = f"tr[data-worker-id='{worker_id}']"
        await page.wait_for_selector(worker, timeout=20_000)
        await page.click(row)
        await page.wait_for_selector("#run-log li[data-type='run.started']", timeout=20_000)

        # Every action is disabled, saying why.
        for button in (
            "#run-create button",
            "#append-form button",
            "#run-stop",
            f"{worker} button[data-action='request']",
            f"{worker} button[data-action='stop']",
        ):
            assert await page.is_disabled(button), button
            title = await page.get_attribute(button, "title")
            assert title and "your role (viewer) may not" in title, (button, title)
        await _shot(page, "20-viewer-actions-disabled")

        # Forced anyway, runtime refuses: 403 `forbidden`, shown with its code.
        await _force_click(page, "#run-stop")
        text, code = await _banner(page)
        assert code == "forbidden", text
        assert "stop run: forbidden (HTTP 403)" in text, text
        await _shot(page, "21-viewer-forced-stop-refused")
        await _force_click(page, f"{worker} button[data-action='stop']")
        await page.wait_for_function(
            "document.getElementById('banner').textContent"
            f".startsWith('stop worker {worker_id}: forbidden (HTTP 403)')",
            timeout=20_000,
        )
        assert (await owner.get_run(run_id))["status"] == "running"
        assert (await owner.get_worker(worker_id))["status"] == "registered"
        assert [e["type"] for e in (await owner.read_events(run_id))["events"]] == [
            "run.created",
            "run.started",
        ]
