"""Two projector replicas share the partitions under load; SIGKILL one of them
mid-stream and every client still sees every frame of its run exactly once, in
order, with payloads equal to runtime's log (docs/pipeline.md, scale-out)."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid

import aiohttp
import pytest

from khala_client import KhalaApi, connect
from khala_common.settings import DEFAULT_PARTITIONS
from khala_common.topics import run_topic

from .support import Received, assert_exact_sequence, read_until

pytestmark = pytest.mark.e2e

RUNS = 24
ROUNDS = 30
KILL_AFTER_ROUND = 12


async def metric(http: aiohttp.ClientSession, base_url: str, name: str) -> float:
    """The sum of a metric's samples on a service's /metrics."""
    async with http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def wait_for_split(http: aiohttp.ClientSession, urls: list[str]) -> None:
    """Until the replicas own the partitions half and half."""
    share = DEFAULT_PARTITIONS // len(urls)
    async with asyncio.timeout(30):
        while True:
            owned = [await metric(http, u, "khala_projector_partitions_owned") for u in urls]
            if owned == [share] * len(urls):
                return
            await asyncio.sleep(0.2)


async def test_two_replicas_share_the_load_and_survive_a_sigkill(
    api: KhalaApi, org_id: str, stack, http: aiohttp.ClientSession
) -> None:
    replica = await asyncio.to_thread(stack.add_replica, "projector")
    urls = [stack.url("projector"), stack.url(replica)]
    await wait_for_split(http, urls)

    runs = [f"rep{i}-{uuid.uuid4().hex[:6]}" for i in range(RUNS)]
    for run_id in runs:
        await api.create_run(org_id, run_id)
    topics = [run_topic(org_id, run_id) for run_id in runs]
    token = (await api.sync_token(topics))["token"]
    clients = []
    for topic in topics:
        client = await connect(http, stack.ws_url, token)
        await client.subscribe([topic])
        clients.append(client)
    seen = {topic: Received() for topic in topics}
    head = ROUNDS + 2  # run.created, run.started, then one run.output per round
    readers = [
        asyncio.create_task(read_until(client, topic, head, seen[topic], timeout_s=180))
        for client, topic in zip(clients, topics, strict=True)
    ]

    async def append(run_id: str, event: dict[str, object]) -> None:
        await api.append_events(run_id, [event])

    await asyncio.gather(
        *(append(r, {"type": "run.started", "idempotency_key": "s"}) for r in runs)
    )
    applied_before_kill: list[float] = []
    for n in range(1, ROUNDS + 1):
        await asyncio.gather(
            *(
                append(r, {"type": "run.output", "payload": {"n": n}, "idempotency_key": f"o{n}"})
                for r in runs
            )
        )
        if n == KILL_AFTER_ROUND:
            applied_before_kill = [
                await metric(http, u, "khala_projector_events_projected_total") for u in urls
            ]
            await asyncio.to_thread(stack.kill, replica, signal.SIGKILL)

    # Both replicas applied a share of the load before one was killed.
    assert all(count > 0 for count in applied_before_kill), applied_before_kill
    await asyncio.gather(*readers)
    for run_id, topic in zip(runs, topics, strict=True):
        assert_exact_sequence(seen[topic].seqs, 1, head)
        log = await api.read_events(run_id, after_seq=0, limit=1000)
        assert [e["event_id"] for e in log["events"]] == [e.event_id for e in seen[topic].events()]
    # The survivor took every partition over.
    assert await metric(http, urls[0], "khala_projector_partitions_owned") == DEFAULT_PARTITIONS
    for client in clients:
        await client.close()
