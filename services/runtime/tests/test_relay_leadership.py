"""Integration: two runtime instances on one database and broker prefix.

Exactly one outbox relay leads; every accepted event is published, in order
per stream; when the leader's process stops while appends go on, the other
instance takes over and publishes the rest. Delivery is at-least-once, so a
takeover may republish events the old leader had published but not yet
marked: the test checks the first delivery of each event, per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from khala_common.db import migrate
from khala_common.topology import Topology
from khala_runtime.app import Started, relay_key, start
from khala_runtime.domain.model import CreateRun
from khala_runtime.handlers.context import service_key
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA
from openagents.runtime.v1.events_pb2 import EventInput, RuntimeEvent

pytestmark = pytest.mark.integration

RUNS = 8
BATCHES_BEFORE = 30
BATCHES_AFTER = 30
GENEROUS_S = 60.0


@pytest.fixture
async def own_database(pg_server_url: str) -> AsyncIterator[str]:
    """A database of its own: no other relay competes for its advisory lock."""
    name = f"khala_test_lead_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(pg_server_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    await asyncio.to_thread(migrate, url, SCHEMA, MIGRATIONS_DIR)
    yield url
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


async def eventually(check: Any, what: str) -> None:
    """Wait (generously) until `check()` holds."""
    async with asyncio.timeout(GENEROUS_S):
        while not check():  # noqa: ASYNC110 - polls state owned by another component
            await asyncio.sleep(0.05)


def first_deliveries(events: list[RuntimeEvent]) -> dict[str, list[int]]:
    """Per stream, the seqs in the order of each event's first delivery."""
    seen: set[str] = set()
    order: dict[str, list[int]] = {}
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            order.setdefault(event.stream_id, []).append(event.stream_seq)
    return order


async def test_leader_takeover_publishes_everything_in_order(
    own_database: str,
    fresh_topology: Topology,
    control: Any,
    settings_for: Any,
    open_tap: Any,
    unique: str,
) -> None:
    _, _, control_url, control_target = control
    settings = settings_for(
        control_url,
        control_target,
        KHALA_DATABASE_URL=own_database,
        KHALA_AMQP_PREFIX=fresh_topology.prefix,
        KHALA_OUTBOX_POLL_INTERVAL_S="0.1",
    )
    tap = await open_tap("#", fresh_topology)
    first = await start(settings)
    second: Started | None = None
    running: list[Started] = [first]
    leader_counts: list[int] = []
    sampling = asyncio.Event()

    async def sample_leaders() -> None:
        """How many relays lead, every 2 ms for the whole test (never more than one)."""
        while not sampling.is_set():
            leader_counts.append(sum(s.app[relay_key].is_leader for s in running))
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample_leaders())
    try:
        await eventually(lambda: first.app[relay_key].is_leader, "first instance leads")
        second = await start(settings)
        running.append(second)
        instances = [first, second]
        org = f"org{unique}"
        runs = [f"r{i}{unique}" for i in range(RUNS)]
        writer = second.app[service_key]  # appends go through the instance that stays up
        for run_id in runs:
            await writer.create_run(CreateRun(org_id=org, run_id=run_id, title=""))
            await writer.append(run_id, [EventInput(type="run.started")], expected_seq=None)
        rng = random.Random(7)

        async def append_batches(count: int) -> None:
            for i in range(count):
                run_id = rng.choice(runs)
                size = rng.randint(1, 40)
                await writer.append(
                    run_id,
                    [EventInput(type="run.output", payload_json=b'{"text":"%d"}' % i)] * size,
                    expected_seq=None,
                )

        await append_batches(BATCHES_BEFORE)
        leaders = [s for s in instances if s.app[relay_key].is_leader]
        assert leaders == [first], "exactly the first instance leads"

        appending = asyncio.create_task(append_batches(BATCHES_AFTER))
        await asyncio.sleep(0)  # let appends start, then stop the leader mid-stream
        await first.stop()
        await appending
        await eventually(lambda: second.app[relay_key].is_leader, "second instance takes over")

        conn = await asyncpg.connect(own_database)
        try:
            heads = {
                f"run:{r['run_id']}": r["last_seq"]
                for r in await conn.fetch("SELECT run_id, last_seq FROM runtime.runs")
            }
            expected_total = sum(heads.values())
        finally:
            await conn.close()

        def complete() -> bool:
            ids = {event.event_id for event in tap.events}
            return len(ids) >= expected_total

        await eventually(complete, "every event published")
        received = list(tap.events)
        order = first_deliveries(received)
        assert set(order) == set(heads)
        for stream_id, seqs in order.items():
            assert seqs == list(range(1, heads[stream_id] + 1)), stream_id
        assert len({e.event_id for e in received}) == expected_total
        sampling.set()
        await sampler
        assert max(leader_counts) == 1, "two relays led at once"
        assert len(leader_counts) > 100
    finally:
        sampler.cancel()
        if second is not None:
            await second.stop()
        with contextlib.suppress(Exception):
            await first.stop()
