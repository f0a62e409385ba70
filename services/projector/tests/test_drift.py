"""Drift detector: re-derives documents from runtime's log, counts and logs drift,
and repairs it (one DOC_UPSERT in the current epoch) when enabled."""

from __future__ import annotations

import hashlib

import pytest
from projector_testkit import (
    SERVICE_TOKEN,
    FanoutTap,
    metric_value,
    publish_events,
    run_events,
    snapshot,
    topic_head,
    wait_checkpoints,
    worker_events,
)

from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.app import running
from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import fold
from khala_projector.storage.projection_store import CheckpointRow, ProjectionStore
from khala_projector.storage.topic_log import TopicLog
from khala_projector.usecases.drift import DriftDetector
from khala_projector.usecases.projector import Projector
from khala_projector.usecases.publisher import FanoutPublisher
from openagents.codex.v1.summaries_pb2 import RunSummary

LIFECYCLE = ["run.created", "run.started", "run.output", "run.completed"]


@pytest.fixture
async def drift_parts(khala_pool, test_broker, runtime_double):
    reader = RuntimeReader(runtime_double[1], SERVICE_TOKEN, 5.0)
    store = ProjectionStore(khala_pool)
    publisher = FanoutPublisher(test_broker, TopicLog(khala_pool), test_broker.topology.fanout)
    await publisher.catch_up()
    yield store, reader, Projector(store, reader, publisher)
    await reader.close()


async def corrupt(pool, run_id: str) -> bytes:
    """Overwrite a run's document with another, self-consistent one (a silent bug)."""
    wrong = RunSummary(run_id=run_id, title="wrong").SerializeToString(deterministic=True)
    await pool.execute(
        "UPDATE documents SET doc = $2, doc_hash = $3 WHERE projection = 'runs' AND key = $1",
        run_id,
        wrong,
        hashlib.sha256(wrong).hexdigest(),
    )
    return wrong


@pytest.mark.integration
async def test_drift_is_counted_and_repaired(
    projector_settings, test_broker, khala_pool, runtime_double, drift_parts, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, LIFECYCLE)
    healthy = worker_events(org, f"w{unique}", ["worker.started", "worker.heartbeat"])
    double, _ = runtime_double
    double.hold(events + healthy)
    async with running(projector_settings):
        await publish_events(test_broker, events + healthy)
        await wait_checkpoints(khala_pool, {f"run:{run_id}": 4, f"worker:w{unique}": 2})
    right = fold(stream_of(events[0]), None, events)
    wrong = await corrupt(khala_pool, run_id)
    store, reader, projector = drift_parts
    ids = [f"run:{run_id}", f"worker:w{unique}"]
    incidents = metric_value("khala_projector_drift_incidents_total", {"projection": "runs"})

    report = await DriftDetector(store, reader, projector, sample=5, repair=False).check_streams(
        ids
    )
    assert (report.checked, report.drifted, report.repaired) == (2, [f"run:{run_id}"], [])
    assert metric_value("khala_projector_drift_incidents_total", {"projection": "runs"}) == (
        incidents + 1
    )
    doc = await khala_pool.fetchval("SELECT doc FROM documents WHERE key = $1", run_id)
    assert doc == wrong  # detection alone changes nothing

    runs_topic = f"org.{org}.runs"
    _, head, _ = await topic_head(khala_pool, runs_topic)
    tap = await FanoutTap.open(test_broker, [runs_topic])
    try:
        detector = DriftDetector(store, reader, projector, sample=5, repair=True)
        report = await detector.check_streams(ids)
        assert (report.drifted, report.repaired) == ([f"run:{run_id}"], [f"run:{run_id}"])
        await tap.wait(runs_topic, 1)
    finally:
        await tap.close()
    row = await khala_pool.fetchrow(
        "SELECT d.doc, d.doc_hash, c.doc_hash AS cp_hash, c.last_seq FROM documents d"
        " JOIN checkpoints c ON c.stream_id = $2 WHERE d.projection = 'runs' AND d.key = $1",
        run_id,
        f"run:{run_id}",
    )
    assert (row["doc"], row["doc_hash"], row["cp_hash"], row["last_seq"]) == (
        right.doc,
        right.doc_hash,
        right.doc_hash,
        4,
    )
    # Subscribers converge through one DOC_UPSERT in the current epoch.
    assert await topic_head(khala_pool, runs_topic) == ("1", head + 1, 1)
    assert (await snapshot(khala_pool, runs_topic))[run_id].payload_bytes == right.doc
    assert tap.frames(runs_topic)[-1].payload_bytes == right.doc
    assert metric_value("khala_projector_drift_repairs_total", {"projection": "runs"}) >= 1
    # Repaired: the next check finds nothing.
    assert (await detector.check_streams(ids)).drifted == []


@pytest.mark.integration
async def test_drift_check_of_an_unreadable_log_is_an_error_not_drift(
    khala_pool, drift_parts, unique
):
    store, reader, projector = drift_parts
    events = run_events(f"org{unique}", f"run{unique}", LIFECYCLE[:2])
    state = await store.load(stream_of(events[0]))
    await store.commit(fold(stream_of(events[0]), None, events), state, 1)
    errors = metric_value("khala_projector_drift_errors_total")
    # The runtime double holds nothing: its log is shorter than the checkpoint.
    report = await DriftDetector(store, reader, projector, sample=5, repair=True).check_streams(
        [f"run:run{unique}"]
    )
    assert (report.checked, report.drifted, report.errors) == (0, [], 1)
    assert metric_value("khala_projector_drift_errors_total") == errors + 1


class FakeSampleStore:
    """Stands in for ProjectionStore.sample over a fixed, sorted set of stream ids."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = sorted(ids)

    async def sample(self, after: str, limit: int) -> list[CheckpointRow]:
        return [CheckpointRow(sid, "org", 0, "", None, "") for sid in self.ids if sid > after][
            :limit
        ]


async def test_the_sample_window_rotates_over_every_stream():
    store = FakeSampleStore([f"run:r{i}" for i in range(5)])
    seen: list[list[str]] = []

    class Recording(DriftDetector):
        async def _check_rows(self, rows):  # type: ignore[override]
            seen.append([row.stream_id for row in rows])
            return await super()._check_rows([])

    detector = Recording(store, None, None, sample=2, repair=False)  # type: ignore[arg-type]
    for _ in range(4):
        await detector.check_sample()
    assert seen == [
        ["run:r0", "run:r1"],
        ["run:r2", "run:r3"],
        ["run:r4", "run:r0"],
        ["run:r1", "run:r2"],
    ]
