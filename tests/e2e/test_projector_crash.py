"""SIGKILL the projector in the middle of a burst of appends: after a restart
every frame still reaches the client exactly once, in order, and the topic
log equals runtime's event log."""

from __future__ import annotations

import asyncio
import signal
import uuid

import aiohttp
import pytest

from khala_client import KhalaApi, connect
from khala_common.topics import run_topic

from .support import Received, assert_exact_sequence, read_until

pytestmark = pytest.mark.e2e

EVENTS = 300


async def test_projector_sigkill_loses_and_duplicates_nothing(
    api: KhalaApi, org_id: str, stack, http: aiohttp.ClientSession
) -> None:
    run_id = f"crash-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id)
    topic = run_topic(org_id, run_id)
    token = (await api.sync_token([topic]))["token"]
    client = await connect(http, stack.ws_url, token)
    await client.subscribe([topic])
    seen = Received()

    async def appends() -> None:
        await api.append_events(
            run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]
        )
        for i in range(1, EVENTS):
            await api.append_events(
                run_id, [{"type": "run.output", "payload": {"n": i}, "idempotency_key": f"o{i}"}]
            )
            if i == EVENTS // 3:
                await asyncio.to_thread(stack.kill, "projector", signal.SIGKILL)
            if i == EVENTS // 2:
                await asyncio.to_thread(stack.start, "projector")

    head = EVENTS + 1
    reader = asyncio.create_task(read_until(client, topic, head, seen, timeout_s=120))
    await appends()
    await asyncio.to_thread(stack.wait_ready, "projector")
    await reader
    assert_exact_sequence(seen.seqs, 1, head)
    log = await api.read_events(run_id, after_seq=0, limit=1000)
    assert [e["event_id"] for e in log["events"]] == [e.event_id for e in seen.events()]
    await client.close()
