"""Integration: an event too large for one gateway message is a 413, nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from khala_runtime.app import start

pytestmark = pytest.mark.integration


class _Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.base + path, headers=headers, json=body) as r:
            return r.status, await r.json(), dict(r.headers)


@pytest.fixture
async def api(control: Any, settings_for: Any) -> AsyncIterator[_Api]:
    """A runtime with the production body cap (1 MiB; the session's has 64 KiB)."""
    _, _, url, target = control
    runtime = await start(settings_for(url, target, KHALA_MAX_BODY_BYTES=str(1024 * 1024)))
    try:
        async with aiohttp.ClientSession() as session:
            yield _Api(session, f"http://127.0.0.1:{runtime.http_port}")
    finally:
        await runtime.stop()


async def test_oversize_event_is_413_frame_too_large_and_nothing_is_written(
    api: Any, identity: Any, unique: str
) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    status, run, _ = await api.call(
        "POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id}
    )
    assert status == 201, run
    path = f"/api/v1/runs/{run_id}/events"
    # The case: 1,040,000 bytes of payload, under runtime's 1 MiB body cap.
    batch = [{"type": "run.started"}, {"type": "run.output", "payload": {"text": "a" * 1_040_000}}]
    status, err, _ = await api.call("POST", path, token, {"events": batch})
    assert status == 413, err
    assert err["error"]["code"] == "frame_too_large"
    assert err["error"]["field"] == "events[1].payload"
    status, page, _ = await api.call("GET", path, token)
    assert status == 200 and [e["type"] for e in page["events"]] == ["run.created"]
    status, snap, _ = await api.call("GET", f"/api/v1/runs/{run_id}", token)
    assert snap["last_seq"] == 1 and snap["status"] == "created"
    # Just under the bound is accepted.
    status, receipt, _ = await api.call(
        "POST",
        path,
        token,
        {
            "events": [
                {"type": "run.started"},
                {"type": "run.output", "payload": {"text": "a" * 700_000}},
            ]
        },
    )
    assert status == 201 and receipt["last_seq"] == 3
