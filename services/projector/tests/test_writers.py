"""Integration: several writers of the khala schema (live consumer, rebuild
staging, drift repair) never corrupt each other; write failures are counted."""

from __future__ import annotations

import pytest
from projector_testkit import (
    SERVICE_TOKEN,
    FanoutTap,
    metric_value,
    replay,
    run_events,
    topic_head,
)

from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import Projection, fold
from khala_projector.domain.rebuild import RebuildScope, RebuildStatus
from khala_projector.storage.projection_store import (
    CheckpointMoved,
    ProjectionStore,
    StreamState,
)
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.storage.topic_log import TopicLog
from khala_projector.usecases.projector import Projector
from khala_projector.usecases.publisher import FanoutPublisher

pytestmark = pytest.mark.integration


class StaleOnce(ProjectionStore):
    """A store whose first load is answered before another writer commits."""

    def __init__(self, pool, interloper) -> None:
        super().__init__(pool)
        self._interloper = interloper

    async def load_many(self, streams):
        states = await super().load_many(streams)
        if self._interloper is not None:
            interloper, self._interloper = self._interloper, None
            await interloper()
        return states


async def test_a_moved_checkpoint_is_replanned_not_requeued(
    khala_pool, test_broker, runtime_double, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created", "run.started", "run.output"])
    stream = stream_of(events[0])
    plain = ProjectionStore(khala_pool)
    await plain.commit(fold(stream, None, events[:1]), StreamState(0, None), 1)

    async def other_writer() -> None:  # e.g. a failover twin committing seq 2 first
        state = await plain.load(stream)
        await plain.commit(fold(stream, state.doc, events[1:2]), state, 2)

    reader = RuntimeReader(runtime_double[1], SERVICE_TOKEN, 5.0)
    publisher = FanoutPublisher(test_broker, TopicLog(khala_pool), test_broker.topology.fanout)
    projector = Projector(StaleOnce(khala_pool, other_writer), reader, publisher)
    moved = metric_value("khala_projector_write_failures_total", {"reason": "checkpoint_moved"})
    try:
        await projector.project(stream, events[1:])
    finally:
        await reader.close()
    assert (
        metric_value("khala_projector_write_failures_total", {"reason": "checkpoint_moved"})
        == moved + 1
    )
    frames = await replay(khala_pool, f"org.{org}.run.{run_id}", 0)
    assert [f.seq for f in frames] == [1, 2, 3]
    doc = await khala_pool.fetchval("SELECT doc FROM documents WHERE key = $1", run_id)
    assert doc == fold(stream, None, events).doc
    # A stale document hash is refused even when the seq still matches.
    state = await plain.load(stream)
    with pytest.raises(CheckpointMoved):
        await plain.commit(
            fold(stream, state.doc, run_events(org, run_id, ["x"] * 4)[3:]),
            StreamState(state.last_seq, state.doc, "not-the-hash"),
            3,
        )
    status = (await projector.statuses([(f"run:{run_id}", 5)]))[0]
    assert (status.checkpoint_seq, status.lag_events) == (3, 2)
    assert status.checkpoint_at_ms == events[-1].occurred_at_ms
    assert status.lag_seconds(events[-1].occurred_at_ms + 1500) == 1.5


async def test_staged_frames_are_not_published_and_do_not_hold_the_cursor(
    khala_pool, test_broker, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created", "run.started"])
    stream = stream_of(events[0])
    store = ProjectionStore(khala_pool)
    # A live commit whose publication is still pending (e.g. in flight).
    live = await store.commit(fold(stream, None, events[:1]), StreamState(0, None), 1)
    publisher = FanoutPublisher(test_broker, TopicLog(khala_pool), test_broker.topology.fanout)
    topics = [f"org.{org}.run.{run_id}", f"org.{org}.runs"]
    tap = await FanoutTap.open(test_broker, topics)
    rebuilds = RebuildStore(khala_pool)
    rebuild = await rebuilds.create(RebuildScope(Projection.RUNS, org))

    async def cursor() -> int:
        return await khala_pool.fetchval("SELECT last_frame_id FROM publish_cursor")

    async def staged_ids() -> tuple[int, int]:
        row = await khala_pool.fetchrow(
            "SELECT min(frame_id), max(frame_id) FROM frames WHERE epoch = $1", rebuild.epoch
        )
        return row[0], row[1]

    try:
        await rebuilds.enroll(rebuild)
        first = fold(stream, None, events[:1])
        await rebuilds.stage(rebuild, first, 0, 5)
        # A publishable frame waits below the staged ones: the cursor must not pass it.
        assert await cursor() < min(f.frame_id for f in live)
        await publisher.catch_up()
        await tap.wait(topics[0], 1)
        await tap.wait(topics[1], 1)
        _, staged_max = await staged_ids()
        assert await cursor() < staged_max  # catch-up never publishes a staged epoch
        # Now nothing publishable waits below: staging lets the cursor pass.
        await rebuilds.stage(rebuild, fold(stream, first.doc, events[1:]), 1, 6)
        _, staged_max = await staged_ids()
        assert await cursor() == staged_max
        # Even above the cursor (a restart's catch-up), a staged epoch is not published.
        staged_min, _ = await staged_ids()
        await khala_pool.execute("UPDATE publish_cursor SET last_frame_id = $1", staged_min - 1)
        await publisher.catch_up()
        assert all(f.epoch == "1" for t in topics for f in tap.frames(t))
        assert await topic_head(khala_pool, topics[0]) == ("1", 1, 1)
    finally:
        await tap.close()
        await rebuilds.discard_staged(rebuild)
        await rebuilds.set_status(rebuild, RebuildStatus.ABANDONED)
