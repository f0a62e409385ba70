"""Integration: a burst of 10k heartbeats from 100 workers, fed through the real
khala.projector queue, converges: every checkpoint ends at its stream's last
seq and every CodexWorkerSummary equals the fold of its whole log."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from projector_testkit import make_event, publish_many, replay, wait_checkpoints

from khala_projector.app import running
from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import fold
from openagents.codex.v1 import summaries_pb2
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary
from openagents.runtime.v1.events_pb2 import RuntimeEvent

pytestmark = pytest.mark.integration

WORKERS = 100
HEARTBEATS = 100
BURST = 5  # consecutive events of one worker before the next worker's


def worker_log(org: str, worker_id: str) -> list[RuntimeEvent]:
    sid = f"worker:{worker_id}"
    events = [make_event(org, sid, 1, "worker.started")]
    events += [
        make_event(org, sid, seq, "worker.heartbeat", occurred_at_ms=1_700_000_000_000 + seq * 500)
        for seq in range(2, HEARTBEATS + 2)
    ]
    return events


@pytest.mark.timeout(240)
async def test_ten_thousand_heartbeats_converge(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org = f"org{unique}"
    logs = {f"w{i:03d}{unique}": worker_log(org, f"w{i:03d}{unique}") for i in range(WORKERS)}
    double, _ = runtime_double
    for events in logs.values():
        double.hold(events)  # so any gap (e.g. a reordered publish) can be filled
    # Interleave the workers in bursts, the way a fleet heartbeats.
    feed: list[RuntimeEvent] = []
    for start in range(0, HEARTBEATS + 1, BURST):
        for events in logs.values():
            feed += events[start : start + BURST]
    assert sum(e.type == "worker.heartbeat" for e in feed) == WORKERS * HEARTBEATS

    settings = dataclasses.replace(projector_settings, prefetch=500, batch_max=500)
    async with running(settings):
        await publish_many(test_broker, feed)
        await wait_checkpoints(
            khala_pool, {f"worker:{w}": HEARTBEATS + 1 for w in logs}, timeout_s=180
        )

    rows = await khala_pool.fetch(
        "SELECT c.stream_id, c.last_seq, c.doc_hash, d.doc, d.doc_hash AS stored_hash, d.last_seq"
        " AS doc_seq FROM checkpoints c JOIN documents d ON d.projection = 'workers'"
        " AND d.key = split_part(c.stream_id, ':', 2) WHERE c.org_id = $1",
        org,
    )
    assert len(rows) == WORKERS
    for row in rows:
        events = logs[row["stream_id"].partition(":")[2]]
        expected = fold(stream_of(events[0]), None, events)
        assert row["last_seq"] == row["doc_seq"] == HEARTBEATS + 1, row["stream_id"]
        assert row["doc"] == expected.doc, row["stream_id"]
        assert row["doc_hash"] == row["stored_hash"] == hashlib.sha256(row["doc"]).hexdigest()
        doc = CodexWorkerSummary.FromString(row["doc"])
        assert doc.heartbeat_count == HEARTBEATS
        assert doc.status == summaries_pb2.WORKER_STATUS_RUNNING
        assert doc.heartbeat_state == summaries_pb2.HEARTBEAT_STATE_FRESH
        assert doc.last_heartbeat_at_ms == events[-1].occurred_at_ms

    # Each worker's event topic is its log, gapless; the doc topic ends on every doc.
    for worker_id, events in list(logs.items())[:10]:
        frames = await replay(khala_pool, f"org.{org}.worker.{worker_id}", 0)
        assert [f.seq for f in frames] == list(range(1, HEARTBEATS + 2))
        assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events
    docs = await replay(khala_pool, f"org.{org}.workers", 0)
    assert [f.seq for f in docs] == list(range(1, len(docs) + 1))
    latest = {f.key: f.payload_bytes for f in docs}
    assert latest == {row["stream_id"].partition(":")[2]: row["doc"] for row in rows}
