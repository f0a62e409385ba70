"""Integration: the projector against real Postgres and RabbitMQ, with a
RuntimeService test double standing in for runtime's gRPC API."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import grpc
import pytest
from projector_testkit import (
    SERVICE_TOKEN,
    FanoutTap,
    make_event,
    metric_value,
    publish_events,
    run_events,
    wait_for,
)

from khala_common.broker import Broker
from khala_common.grpc_server import insecure_channel, service_metadata
from khala_common.topology import TYPE_HEADER
from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.app import running
from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import fold
from khala_projector.storage.projection_store import ProjectionStore, StreamState
from khala_projector.storage.topic_log import TopicLog
from khala_projector.usecases.projector import Projector
from khala_projector.usecases.publisher import FanoutPublisher
from openagents.codex.v1 import summaries_pb2
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary, RunSummary
from openagents.runtime.v1.events_pb2 import RuntimeEvent
from openagents.sync.v1 import frames_pb2
from openagents.sync.v1 import projector_admin_pb2 as admin_pb
from openagents.sync.v1.frames_pb2 import KhalaFrame
from openagents.sync.v1.projector_admin_pb2_grpc import ProjectorAdminStub

pytestmark = pytest.mark.integration

LIFECYCLE = ["run.created", "run.started", "run.output", "run.output", "run.completed"]


async def checkpoint(pool, stream_id: str) -> int:
    value = await pool.fetchval("SELECT last_seq FROM checkpoints WHERE stream_id = $1", stream_id)
    return value or 0


async def wait_checkpoint(pool, stream_id: str, seq: int) -> None:
    async def reached() -> bool:
        return await checkpoint(pool, stream_id) >= seq

    await wait_for(reached, what=f"checkpoint {stream_id} >= {seq}")


async def topic_frames(pool, topic: str) -> list[KhalaFrame]:
    rows = await pool.fetch(
        "SELECT seq, kind, key, frame_bytes FROM frames WHERE topic = $1 ORDER BY seq", topic
    )
    frames = [KhalaFrame.FromString(row["frame_bytes"]) for row in rows]
    for row, frame in zip(rows, frames, strict=True):
        assert (frame.seq, int(frame.kind), frame.key) == (row["seq"], row["kind"], row["key"])
    return frames


async def test_events_in_order_become_docs_and_gapless_frames(
    projector_settings, test_broker, khala_pool, unique
):
    org, run_id, worker_id = f"org{unique}", f"run{unique}", f"wk{unique}"
    events = run_events(org, run_id, LIFECYCLE)
    worker = [
        make_event(org, f"worker:{worker_id}", 1, "worker.started"),
        make_event(org, f"worker:{worker_id}", 2, "worker.heartbeat"),
        make_event(org, f"worker:{worker_id}", 3, "worker.error", {"error": "oops"}),
    ]
    runs_topic, run_topic = f"org.{org}.runs", f"org.{org}.run.{run_id}"
    tap = await FanoutTap.open(test_broker, [runs_topic, run_topic, f"org.{org}.worker.#"])
    try:
        async with running(projector_settings):
            for event in events:
                await publish_events(test_broker, [event])
                await asyncio.sleep(0.02)
            await publish_events(test_broker, worker)
            await wait_checkpoint(khala_pool, f"run:{run_id}", 5)
            await wait_checkpoint(khala_pool, f"worker:{worker_id}", 3)
            await tap.wait(run_topic, 5)

            # The document is the fold of the events, stored with its hash.
            row = await khala_pool.fetchrow(
                "SELECT doc, doc_hash, last_seq, org_id FROM documents "
                "WHERE projection = 'runs' AND key = $1",
                run_id,
            )
            expected = fold(stream_of(events[0]), None, events)
            assert row["doc"] == expected.doc
            assert row["doc_hash"] == hashlib.sha256(row["doc"]).hexdigest()
            assert (row["last_seq"], row["org_id"]) == (5, org)
            summary = RunSummary.FromString(row["doc"])
            assert summary.status == summaries_pb2.RUN_STATUS_SUCCEEDED
            assert (summary.title, summary.output_count, summary.event_count) == (
                f"Run {run_id}",
                2,
                5,
            )
            cp = await khala_pool.fetchrow(
                "SELECT doc_hash, projection_version FROM checkpoints WHERE stream_id = $1",
                f"run:{run_id}",
            )
            assert cp["doc_hash"] == row["doc_hash"]
            assert cp["projection_version"] == 1

            # Event topic: one EVENT frame per event, seqs 1..5, payload = the event.
            frames = await topic_frames(khala_pool, run_topic)
            assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
            assert all(f.kind == frames_pb2.FRAME_KIND_EVENT and f.epoch == "1" for f in frames)
            assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events
            assert [f.key for f in frames] == [e.event_id for e in events]
            # Replaying the log reproduces the document byte for byte.
            replayed = fold(
                stream_of(events[0]),
                None,
                [RuntimeEvent.FromString(f.payload_bytes) for f in frames],
            )
            assert replayed.doc == row["doc"]

            # Doc topic: gapless seqs, DOC_UPSERTs keyed by run id, last one = document.
            docs = await topic_frames(khala_pool, runs_topic)
            assert [f.seq for f in docs] == list(range(1, len(docs) + 1))
            assert all(f.kind == frames_pb2.FRAME_KIND_DOC_UPSERT for f in docs)
            assert {f.key for f in docs} == {run_id}
            assert {f.schema_version for f in docs} == {"openagents.codex.v1.RunSummary@1"}
            assert docs[-1].payload_bytes == row["doc"]
            topic_row = await khala_pool.fetchrow(
                "SELECT epoch, head_seq, oldest_seq, is_doc FROM topics WHERE topic = $1",
                run_topic,
            )
            assert tuple(topic_row) == ("1", 5, 1, False)

            # The fanout carried the exact stored bytes, in seq order.
            await tap.wait(runs_topic, len(docs))
            stored = await khala_pool.fetch(
                "SELECT topic, seq, frame_bytes FROM frames WHERE topic = $1 ORDER BY seq",
                run_topic,
            )
            assert tap.raw_frames(run_topic) == [r["frame_bytes"] for r in stored]
            assert {m.routing_key for m in tap.messages} == {f"org.{org}"}
            assert {m.headers[TYPE_HEADER] for m in tap.messages} == {
                "openagents.sync.v1.FanoutBatch"
            }
            assert [f.seq for f in tap.frames(runs_topic)] == [f.seq for f in docs]

            # Worker stream: its own document and topics.
            wrow = await khala_pool.fetchrow(
                "SELECT doc FROM documents WHERE projection = 'workers' AND key = $1", worker_id
            )
            wdoc = CodexWorkerSummary.FromString(wrow["doc"])
            assert wdoc.status == summaries_pb2.WORKER_STATUS_ERROR
            assert (wdoc.heartbeat_count, wdoc.error_count, wdoc.last_error) == (1, 1, "oops")
            wframes = await topic_frames(khala_pool, f"org.{org}.worker.{worker_id}")
            assert [f.seq for f in wframes] == [1, 2, 3]

            # The stored cursor follows the published frames within the retry
            # interval (it is written at most every CURSOR_WRITE_S while busy).
            max_id = await khala_pool.fetchval("SELECT max(frame_id) FROM frames")

            async def cursor_caught_up() -> bool:
                cursor = await khala_pool.fetchval("SELECT last_frame_id FROM publish_cursor")
                return bool(cursor == max_id)

            await wait_for(cursor_caught_up, what="the publish cursor at the last frame")
    finally:
        await tap.close()


async def test_duplicate_delivery_is_skipped(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created", "run.started", "run.output", "run.output"])
    before = metric_value("khala_projector_duplicates_skipped_total")
    async with running(projector_settings):
        await publish_events(test_broker, events[:3])
        await wait_checkpoint(khala_pool, f"run:{run_id}", 3)
        await publish_events(test_broker, [events[1], events[2], events[0], events[3]])
        await wait_checkpoint(khala_pool, f"run:{run_id}", 4)
    frames = await topic_frames(khala_pool, f"org.{org}.run.{run_id}")
    assert [f.seq for f in frames] == [1, 2, 3, 4]
    assert [f.key for f in frames] == [e.event_id for e in events]
    assert metric_value("khala_projector_duplicates_skipped_total") - before >= 3
    assert runtime_double[0].calls == []
    doc = RunSummary.FromString(
        await khala_pool.fetchval("SELECT doc FROM documents WHERE key = $1", run_id)
    )
    assert doc.event_count == 4


async def test_gap_is_filled_through_read_stream(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(
        org, run_id, ["run.created", "run.started", "run.output", "run.paused", "run.resumed"]
    )
    double, _ = runtime_double
    double.hold(events)
    before = metric_value("khala_projector_gaps_filled_total")
    async with running(projector_settings):
        await publish_events(test_broker, [events[0]])
        await wait_checkpoint(khala_pool, f"run:{run_id}", 1)
        await publish_events(test_broker, [events[4]])  # seqs 2..4 never published
        await wait_checkpoint(khala_pool, f"run:{run_id}", 5)
    assert double.calls == [(f"run:{run_id}", 1, 5)]
    assert metric_value("khala_projector_gaps_filled_total") - before == 1
    frames = await topic_frames(khala_pool, f"org.{org}.run.{run_id}")
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events
    doc = RunSummary.FromString(
        await khala_pool.fetchval("SELECT doc FROM documents WHERE key = $1", run_id)
    )
    assert doc == RunSummary.FromString(fold(stream_of(events[0]), None, events).doc)
    assert doc.status == summaries_pb2.RUN_STATUS_RUNNING


async def test_frames_above_the_cursor_are_republished_on_start(
    projector_settings, test_broker, khala_pool, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created", "run.started"])
    # Commit a projection without publishing it: a crash between commit and publish.
    store = ProjectionStore(khala_pool)
    folded = fold(stream_of(events[0]), None, events)
    stored = await store.commit(folded, StreamState(0, None), now_ms=123)
    cursor = await khala_pool.fetchval("SELECT last_frame_id FROM publish_cursor")
    assert cursor < stored[0].frame_id
    topics = [f"org.{org}.runs", f"org.{org}.run.{run_id}"]
    tap = await FanoutTap.open(test_broker, topics)
    try:
        async with running(projector_settings):
            await tap.wait(topics[1], 2)
            await tap.wait(topics[0], 1)
            assert sorted(tap.raw_frames()) == sorted(f.frame_bytes for f in stored)
            assert [f.seq for f in tap.frames(topics[1])] == [1, 2]
            cursor = await khala_pool.fetchval("SELECT last_frame_id FROM publish_cursor")
            assert cursor >= max(f.frame_id for f in stored)
    finally:
        await tap.close()


async def test_poison_messages_go_to_the_dlq_and_later_events_are_projected(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org, run_id, stuck = f"org{unique}", f"run{unique}", f"stuck{unique}"
    double, _ = runtime_double
    double.failing.add(f"run:{stuck}")  # its gap can never be filled
    invalid = make_event(org, f"run:{run_id}", 1, "run.created")
    invalid.stream_id = "bogus"
    unfillable = make_event(org, f"run:{stuck}", 3, "run.output")
    good = run_events(org, run_id, ["run.created", "run.started", "run.output"])
    before_invalid = metric_value("khala_projector_dead_lettered_total", {"reason": "invalid"})
    before_processing = metric_value(
        "khala_projector_dead_lettered_total", {"reason": "processing"}
    )
    exchange = test_broker.topology.runtime_events
    async with running(projector_settings):
        await test_broker.publish_raw(
            exchange, f"{org}.run", b"\x0a\xff", type_name="garbage", message_id="poison-1"
        )
        await publish_events(test_broker, [invalid, unfillable, *good])
        await wait_checkpoint(khala_pool, f"run:{run_id}", 3)

        dlq = await test_broker.channel.get_queue(test_broker.topology.projector_dlq)
        dead: list[bytes] = []

        async def three_dead() -> bool:
            message = await dlq.get(fail=False)
            if message is not None:
                dead.append(message.body)
                await message.ack()
            return len(dead) >= 3

        await wait_for(three_dead, timeout_s=30, what="3 messages in the DLQ")
    assert sorted(dead) == sorted(
        [b"\x0a\xff", invalid.SerializeToString(), unfillable.SerializeToString()]
    )
    assert (
        metric_value("khala_projector_dead_lettered_total", {"reason": "invalid"}) - before_invalid
        == 2
    )
    assert (
        metric_value("khala_projector_dead_lettered_total", {"reason": "processing"})
        - before_processing
        == 1
    )
    assert await checkpoint(khala_pool, f"run:{stuck}") == 0
    limit = projector_settings.delivery_limit
    assert double.calls.count((f"run:{stuck}", 0, 3)) == limit + 1
    frames = await topic_frames(khala_pool, f"org.{org}.run.{run_id}")
    assert [f.seq for f in frames] == [1, 2, 3]


async def test_restart_resumes_from_the_checkpoint(
    projector_settings, test_broker, khala_pool, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created", "run.started", "run.paused", "run.resumed"])
    async with running(projector_settings):
        await publish_events(test_broker, events[:2])
        await wait_checkpoint(khala_pool, f"run:{run_id}", 2)
    await publish_events(test_broker, events)  # 1..2 again (redelivery), 3..4 new
    async with running(projector_settings):
        await wait_checkpoint(khala_pool, f"run:{run_id}", 4)
    frames = await topic_frames(khala_pool, f"org.{org}.run.{run_id}")
    assert [f.seq for f in frames] == [1, 2, 3, 4]


async def test_get_projection_status_over_grpc(projector_settings, test_broker, khala_pool, unique):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, LIFECYCLE[:3])
    last_at = events[-1].occurred_at_ms
    async with running(projector_settings) as app:
        await publish_events(test_broker, events)
        await wait_checkpoint(khala_pool, f"run:{run_id}", 3)
        channel = insecure_channel(f"127.0.0.1:{app.grpc_port}")
        try:
            stub = ProjectorAdminStub(channel)
            heads = [
                admin_pb.StreamHead(stream_id=f"run:{run_id}", head_seq=3),
                admin_pb.StreamHead(
                    stream_id=f"run:{run_id}", head_seq=5, head_occurred_at_ms=last_at + 1500
                ),
                admin_pb.StreamHead(stream_id=f"run:none{unique}", head_seq=0),
                admin_pb.StreamHead(stream_id=f"worker:none{unique}", head_seq=4),
            ]
            response = await stub.GetProjectionStatus(
                admin_pb.GetProjectionStatusRequest(streams=heads),
                metadata=service_metadata(SERVICE_TOKEN),
                timeout=5,
            )
            got = [
                (s.stream_id, s.state, s.checkpoint_seq, s.lag_events) for s in response.statuses
            ]
            assert got == [
                (f"run:{run_id}", admin_pb.PROJECTION_STATE_IN_SYNC, 3, 0),
                (f"run:{run_id}", admin_pb.PROJECTION_STATE_LAGGING, 3, 2),
                (f"run:none{unique}", admin_pb.PROJECTION_STATE_IN_SYNC, 0, 0),
                (f"worker:none{unique}", admin_pb.PROJECTION_STATE_LAGGING, 0, 4),
            ]
            assert last_at > 0
            assert [s.checkpoint_occurred_at_ms for s in response.statuses[:2]] == [last_at] * 2
            assert [s.lag_ms for s in response.statuses] == [0, 1500, 0, 0]
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.GetProjectionStatus(
                    admin_pb.GetProjectionStatusRequest(streams=heads), timeout=5
                )
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.GetProjectionStatus(
                    admin_pb.GetProjectionStatusRequest(streams=[admin_pb.StreamHead()]),
                    metadata=service_metadata(SERVICE_TOKEN),
                    timeout=5,
                )
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await channel.close()


async def test_operational_routes(projector_settings):
    async with running(projector_settings) as app, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{app.http_port}"
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
            assert "khala_projector_events_projected_total" in text
            assert "khala_projector_dead_lettered_total" in text
            assert "khala_projector_frames_published_total" in text
            for series in (
                "khala_projector_projection_lag_events",
                "khala_projector_projection_lag_seconds",
                "khala_projector_write_failures_total",
                "khala_projector_replay_seconds",
                "khala_projector_rebuild_duration_seconds",
                "khala_projector_drift_incidents_total",
                "khala_projector_dlq_depth",
            ):
                assert f"# TYPE {series}" in text, series
        await app.services.sampler.sample_once()
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
            assert 'khala_projector_rebuild_active{projection="runs"}' in text
            assert "khala_projector_dlq_depth 0.0" in text
        app.services.readiness.draining = True
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503


async def test_long_gap_is_filled_in_chunks(khala_pool, test_broker, runtime_double, unique):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created"] + ["run.output"] * 6)
    double, target = runtime_double
    double.hold(events)
    reader = RuntimeReader(target, SERVICE_TOKEN, 5.0)
    publisher = FanoutPublisher(test_broker, TopicLog(khala_pool), test_broker.topology.fanout)
    await publisher.catch_up()
    projector = Projector(ProjectionStore(khala_pool), reader, publisher, gap_chunk_events=3)
    try:
        stream = stream_of(events[-1])
        await projector.project(stream, [events[-1]])
    finally:
        await reader.close()
    sid = f"run:{run_id}"
    assert double.calls == [(sid, 0, 3), (sid, 3, 6), (sid, 6, 7)]
    assert await checkpoint(khala_pool, sid) == 7
    frames = await topic_frames(khala_pool, f"org.{org}.run.{run_id}")
    assert [f.seq for f in frames] == list(range(1, 8))
    docs = await topic_frames(khala_pool, f"org.{org}.runs")
    assert len(docs) == 3  # one DOC_UPSERT per committed chunk
    assert RunSummary.FromString(docs[-1].payload_bytes).output_count == 6


async def test_failed_publish_is_retried_from_the_cursor(khala_pool, test_broker, amqp_url, unique):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created"])
    broker = Broker(amqp_url, test_broker.topology)
    await broker.connect()
    publisher = FanoutPublisher(broker, TopicLog(khala_pool), broker.topology.fanout)
    await publisher.catch_up()
    await broker.close()  # the broker goes away between commit and publish
    stored = await ProjectionStore(khala_pool).commit(
        fold(stream_of(events[0]), None, events), StreamState(0, None), now_ms=1
    )
    failures = metric_value("khala_projector_publish_failures_total")
    await publisher.publish_committed(stored)
    assert publisher.behind
    assert metric_value("khala_projector_publish_failures_total") == failures + 1
    tap = await FanoutTap.open(test_broker, [f"org.{org}.run.{run_id}", f"org.{org}.runs"])
    retry = asyncio.create_task(publisher.retry_forever(0.05))
    try:
        await broker.connect()
        await tap.wait(f"org.{org}.run.{run_id}", 1)
        await tap.wait(f"org.{org}.runs", 1)
        assert set(tap.raw_frames()) >= {f.frame_bytes for f in stored}
        for _ in range(200):  # the cursor advances just after the confirmed publish
            if not publisher.behind:
                break
            await asyncio.sleep(0.05)
        assert not publisher.behind
    finally:
        retry.cancel()
        await asyncio.gather(retry, return_exceptions=True)
        await tap.close()
        await broker.close()
