"""Integration: the deliveries of several streams are committed in one
transaction, all or nothing, and a stream that cannot be projected does not
hold the others back."""

from __future__ import annotations

import pytest
from projector_testkit import (
    SERVICE_TOKEN,
    publish_events,
    replay,
    run_events,
    wait_checkpoints,
)

from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.app import running
from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import fold
from khala_projector.storage.projection_store import (
    CheckpointMoved,
    ProjectionStore,
    StreamState,
)
from khala_projector.storage.topic_log import TopicLog
from khala_projector.usecases.projector import Projector
from khala_projector.usecases.publisher import FanoutPublisher

pytestmark = pytest.mark.integration

TYPES = ["run.created", "run.started", "run.output"]


async def transactions_of(pool, topics: list[str]) -> set[int]:
    """The ids of the transactions that wrote the topics' frames."""
    rows = await pool.fetch(
        "SELECT DISTINCT xmin::text::bigint AS tx FROM frames WHERE topic = ANY($1::text[])",
        topics,
    )
    return {row["tx"] for row in rows}


async def test_several_streams_commit_in_one_transaction(
    khala_pool, test_broker, runtime_double, unique
):
    org = f"org{unique}"
    runs = [f"run{unique}x{i}" for i in range(3)]
    logs = {run_id: run_events(org, run_id, TYPES) for run_id in runs}
    reader = RuntimeReader(runtime_double[1], SERVICE_TOKEN, 5.0)
    publisher = FanoutPublisher(test_broker, TopicLog(khala_pool), test_broker.topology.fanout)
    projector = Projector(ProjectionStore(khala_pool), reader, publisher)
    try:
        # Each stream's deliveries with a duplicate among them.
        await projector.project_many(
            [(stream_of(events[0]), [*events, events[1]]) for events in logs.values()]
        )
    finally:
        await reader.close()
    run_topics = [f"org.{org}.run.{run_id}" for run_id in runs]
    assert len(await transactions_of(khala_pool, [*run_topics, f"org.{org}.runs"])) == 1
    for run_id, topic in zip(runs, run_topics, strict=True):
        assert [f.seq for f in await replay(khala_pool, topic, 0)] == [1, 2, 3]
        doc = await khala_pool.fetchval("SELECT doc FROM documents WHERE key = $1", run_id)
        assert doc == fold(stream_of(logs[run_id][0]), None, logs[run_id]).doc
    # The org's doc topic got one upsert per stream, numbered gaplessly.
    upserts = await replay(khala_pool, f"org.{org}.runs", 0)
    assert [(f.seq, f.key) for f in upserts] == [(1, runs[0]), (2, runs[1]), (3, runs[2])]


async def test_one_moved_checkpoint_writes_nothing_for_any_stream(khala_pool, unique):
    org = f"org{unique}"
    first, second = (run_events(org, f"run{unique}y{i}", TYPES) for i in range(2))
    store = ProjectionStore(khala_pool)
    a, b = stream_of(first[0]), stream_of(second[0])
    await store.commit(fold(b, None, second[:1]), StreamState(0, None), 1)
    with pytest.raises(CheckpointMoved, match=b.stream_id):
        await store.commit_many(
            [
                (fold(a, None, first), StreamState(0, None)),
                # Planned as if `b` had no checkpoint: it has #1 now.
                (fold(b, None, second), StreamState(0, None)),
            ],
            2,
        )
    states = await store.load_many([a, b])
    assert [s.last_seq for s in states] == [0, 1]
    assert await replay(khala_pool, f"org.{org}.run.{a.subject_id}", 0) == []
    with pytest.raises(ValueError, match="distinct"):
        await store.commit_many(
            [(fold(a, None, first), StreamState(0, None))] * 2,
            3,
        )


async def test_a_stream_that_fails_does_not_hold_back_the_others(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org = f"org{unique}"
    logs = [run_events(org, f"run{unique}z{i}", TYPES) for i in range(4)]
    blocked = logs[0]
    # Interleaved in one burst; the first stream starts at seq 2 and runtime
    # cannot supply seq 1 yet, so its gap cannot be filled.
    burst = [events[i] for i in range(3) for events in logs if events is not blocked or i > 0]
    await test_broker.declare_projector_queue(projector_settings.delivery_limit)
    await publish_events(test_broker, burst)
    async with running(projector_settings):
        targets = {events[0].stream_id: 3 for events in logs[1:]}
        await wait_checkpoints(khala_pool, targets)
        assert await store_seq(khala_pool, blocked[0].stream_id) == 0
        runtime_double[0].hold(blocked)
        await wait_checkpoints(khala_pool, {blocked[0].stream_id: 3})
    for events in logs:
        topic = f"org.{org}.run.{stream_of(events[0]).subject_id}"
        assert [f.seq for f in await replay(khala_pool, topic, 0)] == [1, 2, 3]


async def store_seq(pool, stream_id: str) -> int:
    value = await pool.fetchval("SELECT last_seq FROM checkpoints WHERE stream_id = $1", stream_id)
    return value or 0
