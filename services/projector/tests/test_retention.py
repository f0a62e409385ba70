"""Integration: retention and compaction keep every remaining replay contiguous
and every live key in the doc snapshot, also while frames keep arriving."""

from __future__ import annotations

import asyncio

import pytest
from projector_testkit import make_event, metric_value, replay, snapshot, topic_head

from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import fold
from khala_projector.domain.retention import RetentionPolicy
from khala_projector.storage.projection_store import ProjectionStore
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.storage.retention_store import RetentionStore
from khala_projector.usecases.retention import RetentionWorker
from openagents.runtime.v1.events_pb2 import RuntimeEvent

pytestmark = pytest.mark.integration

NOW_MS = 1_800_000_000_000


def run_log(org: str, run_id: str, count: int) -> list[RuntimeEvent]:
    sid = f"run:{run_id}"
    return [make_event(org, sid, 1, "run.created", {"title": run_id})] + [
        make_event(org, sid, seq, "run.output", {"text": f"out {seq}"})
        for seq in range(2, count + 1)
    ]


async def project_one_by_one(
    store: ProjectionStore, events: list[RuntimeEvent], now_ms: int = NOW_MS
) -> None:
    """Commit each event in its own transaction (one EVENT + one DOC_UPSERT frame)."""
    stream = stream_of(events[0])
    for event in events:
        state = await store.load(stream)
        await store.commit(fold(stream, state.doc, [event]), state, now_ms)


async def assert_replayable(pool, topic: str) -> list[int]:
    """Replay from oldest_seq - 1 reaches the head with no gap; returns the seqs.

    Reads the topic row and its frames in one snapshot, as a gateway would see them.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        row = await conn.fetchrow(
            "SELECT epoch, head_seq, oldest_seq FROM topics WHERE topic = $1", topic
        )
        if row is None:
            return []
        seqs = [
            r["seq"]
            for r in await conn.fetch(
                "SELECT seq FROM frames WHERE topic = $1 AND epoch = $2 AND seq >= $3"
                " AND seq <= $4 ORDER BY seq",
                topic,
                row["epoch"],
                row["oldest_seq"],
                row["head_seq"],
            )
        ]
    assert seqs == list(range(row["oldest_seq"], row["head_seq"] + 1)), topic
    return seqs


async def test_event_and_doc_topics_compact_without_breaking_replay(khala_pool, unique):
    org = f"org{unique}"
    store = ProjectionStore(khala_pool)
    logs = {f"r{i}{unique}": run_log(org, f"r{i}{unique}", 6 + 4 * i) for i in range(4)}
    for events in logs.values():
        await project_one_by_one(store, events)
    runs_topic = f"org.{org}.runs"
    long_topic = f"org.{org}.run.r3{unique}"  # 18 frames
    before_docs = await snapshot(khala_pool, runs_topic)
    assert len(before_docs) == 4
    _, doc_head, _ = await topic_head(khala_pool, runs_topic)

    policy = RetentionPolicy(event_max_frames=10, event_max_age_ms=0, doc_tail_frames=5)
    worker = RetentionWorker(RetentionStore(khala_pool, batch=3), RebuildStore(khala_pool), policy)
    compacted = metric_value("khala_projector_frames_compacted_total", {"topic_class": "event"})
    report = await worker.run_pass(topic_prefix=f"org.{org}.")

    # Event topics: the last 10 frames stay; oldest_seq moved to the first of them.
    assert await topic_head(khala_pool, long_topic) == ("1", 18, 9)
    assert await assert_replayable(khala_pool, long_topic) == list(range(9, 19))
    assert await topic_head(khala_pool, f"org.{org}.run.r0{unique}") == ("1", 6, 1)
    assert report.event_frames == (14 - 10) + (18 - 10)
    assert (
        metric_value("khala_projector_frames_compacted_total", {"topic_class": "event"}) - compacted
        == report.event_frames
    )

    # Doc topic: superseded frames below the tail are gone, every key's latest stays.
    docs_after = await snapshot(khala_pool, runs_topic)
    assert {k: f.payload_bytes for k, f in docs_after.items()} == {
        k: f.payload_bytes for k, f in before_docs.items()
    }
    _, head, oldest = await topic_head(khala_pool, runs_topic)
    assert head == doc_head and oldest > 1
    assert report.doc_frames == await khala_pool.fetchval(
        "SELECT $1::bigint - count(*) FROM frames WHERE topic = $2", doc_head, runs_topic
    )
    tail = await assert_replayable(khala_pool, runs_topic)
    assert len(tail) >= policy.doc_tail_frames
    below = await khala_pool.fetch(
        "SELECT key, seq FROM frames WHERE topic = $1 AND seq < $2", runs_topic, oldest
    )
    latest = {k: f.seq for k, f in docs_after.items()}
    assert all(latest[r["key"]] == r["seq"] for r in below)  # only latest-per-key survive below

    # A second pass has nothing left to do.
    again = await worker.run_pass(topic_prefix=f"org.{org}.")
    assert (again.event_frames, again.doc_frames) == (0, 0)


async def test_compaction_while_frames_keep_arriving(khala_pool, unique):
    org = f"org{unique}"
    store = ProjectionStore(khala_pool)
    logs = {f"r{i}{unique}": run_log(org, f"r{i}{unique}", 40) for i in range(3)}
    policy = RetentionPolicy(event_max_frames=5, event_max_age_ms=0, doc_tail_frames=4)
    worker = RetentionWorker(RetentionStore(khala_pool, batch=2), RebuildStore(khala_pool), policy)
    done = asyncio.Event()

    async def compact_repeatedly() -> int:
        passes = 0
        while not done.is_set():
            await worker.run_pass(topic_prefix=f"org.{org}.")
            for run_id in logs:
                await assert_replayable(khala_pool, f"org.{org}.run.{run_id}")
            await assert_replayable(khala_pool, f"org.{org}.runs")
            passes += 1
            await asyncio.sleep(0)
        return passes

    async def write_all() -> None:
        try:
            await asyncio.gather(*(project_one_by_one(store, ev) for ev in logs.values()))
        finally:
            done.set()

    passes, _ = await asyncio.gather(compact_repeatedly(), write_all())
    assert passes >= 2
    await worker.run_pass(topic_prefix=f"org.{org}.")
    for run_id, events in logs.items():
        topic = f"org.{org}.run.{run_id}"
        assert await topic_head(khala_pool, topic) == ("1", 40, 36)
        frames = await replay(khala_pool, topic, 35)
        assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events[35:]
    docs = await snapshot(khala_pool, f"org.{org}.runs")
    assert {k: f.payload_bytes for k, f in docs.items()} == {
        run_id: fold(stream_of(ev[0]), None, ev).doc for run_id, ev in logs.items()
    }
    await assert_replayable(khala_pool, f"org.{org}.runs")


async def test_event_frames_expire_by_age_but_the_head_stays(khala_pool, unique):
    org = f"org{unique}"
    store = ProjectionStore(khala_pool)
    events = run_log(org, f"old{unique}", 8)
    await project_one_by_one(store, events[:6], now_ms=NOW_MS - 3_600_000)  # an hour ago
    await project_one_by_one(store, events[6:], now_ms=NOW_MS)
    idle = run_log(org, f"idle{unique}", 3)
    await project_one_by_one(store, idle, now_ms=NOW_MS - 3_600_000)
    policy = RetentionPolicy(event_max_frames=0, event_max_age_ms=60_000, doc_tail_frames=1000)
    worker = RetentionWorker(
        RetentionStore(khala_pool), RebuildStore(khala_pool), policy, clock=lambda: NOW_MS / 1000
    )
    await worker.run_pass(topic_prefix=f"org.{org}.")
    assert await topic_head(khala_pool, f"org.{org}.run.old{unique}") == ("1", 8, 7)
    # Everything of an idle topic is old, but its head frame is kept.
    assert await topic_head(khala_pool, f"org.{org}.run.idle{unique}") == ("1", 3, 3)
    assert await assert_replayable(khala_pool, f"org.{org}.run.idle{unique}") == [3]


async def test_searching_a_doc_topic_for_superseded_frames_holds_no_lock(khala_pool, unique):
    org = f"org{unique}"
    store = ProjectionStore(khala_pool)
    for i in range(3):
        await project_one_by_one(store, run_log(org, f"r{i}{unique}", 8))
    runs_topic = f"org.{org}.runs"
    locked_meanwhile: list[bool] = []

    class Probe(RetentionStore):
        async def _superseded_candidates(self, topic, policy):
            found = await super()._superseded_candidates(topic, policy)
            if topic == runs_topic:
                # A projection commit of the org must be able to lock the doc topic
                # row while the (possibly long) search runs.
                async with khala_pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT topic FROM topics WHERE topic = $1 FOR UPDATE NOWAIT", topic
                    )
                    locked_meanwhile.append(row is not None)
            return found

    policy = RetentionPolicy(event_max_frames=0, event_max_age_ms=0, doc_tail_frames=2)
    worker = RetentionWorker(Probe(khala_pool, batch=4), RebuildStore(khala_pool), policy)
    before = await snapshot(khala_pool, runs_topic)
    report = await worker.run_pass(topic_prefix=f"org.{org}.")
    assert locked_meanwhile and all(locked_meanwhile)
    assert report.doc_frames > 0
    after = await snapshot(khala_pool, runs_topic)
    assert {k: f.payload_bytes for k, f in after.items()} == {
        k: f.payload_bytes for k, f in before.items()
    }
    await assert_replayable(khala_pool, runs_topic)
