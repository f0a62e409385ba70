"""Integration: `khala-projector rebuild` re-derives projections from runtime's log
into a new topic epoch, deterministically, resumably, while live traffic flows."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from projector_testkit import (
    SERVICE_TOKEN,
    FanoutTap,
    projector_env,
    publish_events,
    replay,
    run_cli,
    run_events,
    snapshot,
    topic_head,
    wait_checkpoints,
    wait_for,
    worker_events,
)

from khala_projector.adapters.fanout import fanout_doorbell
from khala_projector.adapters.runtime_reader import RuntimeReader, RuntimeUnavailable
from khala_projector.app import running
from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import Projection, fold
from khala_projector.domain.rebuild import RebuildScope
from khala_projector.handlers.cli import rebuild_command
from khala_projector.storage.rebuild_store import RebuildStore
from khala_projector.usecases.rebuild import Rebuilder, RebuildError
from openagents.runtime.v1.events_pb2 import RuntimeEvent

pytestmark = pytest.mark.integration

RUN_TYPES = {
    "a": ["run.created", "run.started", "run.output", "run.paused", "run.resumed", "run.completed"],
    "b": ["run.created", "run.started", "run.output", "run.failed"],
    "c": ["run.created"] + ["run.output"] * 12,
}
WORKER_TYPES = {
    "x": ["worker.started"] + ["worker.heartbeat"] * 7 + ["worker.error", "worker.stopped"],
    "y": ["worker.registered", "worker.request.received", "worker.heartbeat"],
}


@pytest.fixture
async def reader(runtime_double):
    reader = RuntimeReader(runtime_double[1], SERVICE_TOKEN, 5.0)
    yield reader
    await reader.close()


async def projection_state(pool, org: str) -> dict[str, tuple]:
    """Every document and checkpoint of an org, as stored."""
    rows = await pool.fetch(
        "SELECT c.stream_id, c.last_seq, c.doc_hash, c.projection_version, d.doc,"
        " d.doc_hash AS stored_hash, d.last_seq AS doc_seq FROM checkpoints c"
        " JOIN documents d ON d.key = split_part(c.stream_id, ':', 2)"
        " AND d.projection = CASE WHEN c.stream_id LIKE 'run:%' THEN 'runs' ELSE 'workers' END"
        " WHERE c.org_id = $1",
        org,
    )
    return {r["stream_id"]: tuple(r)[1:] for r in rows}


async def epochs_of(pool, topic: str) -> set[str]:
    rows = await pool.fetch("SELECT DISTINCT epoch FROM frames WHERE topic = $1", topic)
    return {row["epoch"] for row in rows}


async def test_rebuilding_every_projection_is_byte_identical(
    projector_settings, test_broker, khala_pool, runtime_double, reader, unique
):
    org = f"org{unique}"
    logs = {f"run:{k}{unique}": run_events(org, f"{k}{unique}", t) for k, t in RUN_TYPES.items()}
    logs |= {
        f"worker:{k}{unique}": worker_events(org, f"{k}{unique}", t)
        for k, t in WORKER_TYPES.items()
    }
    double, _ = runtime_double
    for events in logs.values():
        double.hold(events)
    async with running(projector_settings):
        # Odd batching on the live path: halves, duplicates, a gap filled by ReadStream.
        for events in logs.values():
            await publish_events(test_broker, events[: len(events) // 2])
            await publish_events(test_broker, [events[0], events[-1]])
        await wait_checkpoints(khala_pool, {sid: len(ev) for sid, ev in logs.items()})
    before = await projection_state(khala_pool, org)
    assert len(before) == len(logs)

    rebuilder = Rebuilder(RebuildStore(khala_pool), reader, chunk=4)
    reports = [
        await rebuilder.run(RebuildScope(Projection.RUNS, org)),
        await rebuilder.run(RebuildScope(Projection.WORKERS, org)),
    ]
    after = await projection_state(khala_pool, org)
    assert after == before  # documents, hashes, checkpoints: byte for byte
    for sid, events in logs.items():
        assert after[sid][3] == fold(stream_of(events[0]), None, events).doc

    # A second rebuild derives the same bytes again, into yet another epoch.
    again = await rebuilder.run(RebuildScope(Projection.RUNS, org))
    assert await projection_state(khala_pool, org) == before
    assert len({r.epoch for r in [*reports, again]}) == 3

    # Topics moved to the rebuild's epoch; the old epochs' frames are gone.
    for sid, events in logs.items():
        kind, _, subject = sid.partition(":")
        epoch = again.epoch if kind == "run" else reports[1].epoch
        topic = f"org.{org}.{kind}.{subject}"
        assert await topic_head(khala_pool, topic) == (epoch, len(events), 1)
        assert await epochs_of(khala_pool, topic) == {epoch}
        frames = await replay(khala_pool, topic, 0)
        assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events
        assert {f.epoch for f in frames} == {epoch}
    for kind, report in (("runs", again), ("workers", reports[1])):
        topic = f"org.{org}.{kind}"
        epoch, head, oldest = await topic_head(khala_pool, topic)
        assert (epoch, oldest) == (report.epoch, 1)
        assert await epochs_of(khala_pool, topic) == {report.epoch}
        docs = await snapshot(khala_pool, topic)
        expected = {sid.partition(":")[2]: v[3] for sid, v in before.items() if kind[:-1] in sid}
        assert {key: f.payload_bytes for key, f in docs.items()} == expected
        assert [f.seq for f in await replay(khala_pool, topic, 0)] == list(range(1, head + 1))
    status = await khala_pool.fetch(
        "SELECT status, finished_at IS NOT NULL AS finished FROM rebuilds WHERE rebuild_id ="
        " ANY($1::bigint[])",
        [r.rebuild_id for r in [*reports, again]],
    )
    assert {(r["status"], r["finished"]) for r in status} == {("done", True)}


async def test_live_traffic_during_a_rebuild_lands_in_the_new_epoch(
    projector_settings, test_broker, khala_pool, runtime_double, reader, unique
):
    org = f"org{unique}"
    a = run_events(org, f"a{unique}", ["run.created", "run.started"] + ["run.output"] * 8)
    b = run_events(org, f"b{unique}", ["run.created", "run.started", "run.completed"])
    late = run_events(org, f"late{unique}", ["run.created", "run.started"])
    double, _ = runtime_double
    runs_topic, a_topic = f"org.{org}.runs", f"org.{org}.run.a{unique}"

    async def append(events: list[RuntimeEvent]) -> None:
        """What runtime does: commit to its log, then publish."""
        double.hold(events)
        await publish_events(test_broker, events)

    async with running(projector_settings):
        await append(a[:4] + b)
        await wait_checkpoints(khala_pool, {f"run:a{unique}": 4, f"run:b{unique}": 3})
        old_epoch = (await topic_head(khala_pool, a_topic))[0]
        tap = await FanoutTap.open(test_broker, [runs_topic, a_topic])

        async def meanwhile() -> None:
            # Staging is done; these are projected live into the old epoch and
            # must reach the new one through the switch's catch-up, like a run
            # created during the rebuild.
            await append(a[4:7] + late)
            await wait_checkpoints(khala_pool, {f"run:a{unique}": 7, f"run:late{unique}": 2})
            assert (await topic_head(khala_pool, a_topic))[:2] == (old_epoch, 7)

        try:
            rebuilder = Rebuilder(
                RebuildStore(khala_pool),
                reader,
                chunk=3,
                before_switch=meanwhile,
                doorbell=fanout_doorbell(test_broker),
            )
            report = await rebuilder.run(RebuildScope(Projection.RUNS, org))
            assert report.orgs_switched == 1
            assert report.streams == 3
            assert (await topic_head(khala_pool, a_topic))[:2] == (report.epoch, 7)

            await append(a[7:])  # after the switch: the live path writes the new epoch
            await wait_checkpoints(khala_pool, {f"run:a{unique}": len(a)})

            async def new_epoch_frames() -> bool:
                return len([f for f in tap.frames(a_topic) if f.epoch == report.epoch]) >= 4

            await wait_for(new_epoch_frames, what="doorbell and live frames of the new epoch")
        finally:
            await tap.close()

    assert old_epoch != report.epoch
    for events in (a, b, late):
        topic = f"org.{org}.run.{events[0].stream_id.partition(':')[2]}"
        frames = await replay(khala_pool, topic, 0)
        assert [f.seq for f in frames] == list(range(1, len(events) + 1))
        assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events
        assert {f.epoch for f in frames} == {report.epoch}
        assert await epochs_of(khala_pool, topic) == {report.epoch}
    docs = await snapshot(khala_pool, runs_topic)
    assert {k: f.payload_bytes for k, f in docs.items()} == {
        e[0].stream_id.partition(":")[2]: fold(stream_of(e[0]), None, e).doc for e in (a, b, late)
    }
    state = await projection_state(khala_pool, org)
    assert {sid: v[0] for sid, v in state.items()} == {
        f"run:a{unique}": len(a),
        f"run:b{unique}": len(b),
        f"run:late{unique}": len(late),
    }
    # Fanout: the doorbell (new epoch's head) and then live frames of the new
    # epoch continuing its seqs. Nothing staged was fanned out.
    new = [f for f in tap.frames(a_topic) if f.epoch == report.epoch]
    assert [f.seq for f in new] == [7, 8, 9, 10]
    assert all(f.epoch in (old_epoch, report.epoch) for f in tap.frames(runs_topic))


async def test_an_interrupted_rebuild_resumes_where_it_stopped(
    projector_settings, test_broker, khala_pool, runtime_double, reader, unique
):
    org = f"org{unique}"
    first = run_events(org, f"a{unique}", ["run.created"] + ["run.output"] * 9)
    second = run_events(org, f"b{unique}", ["run.created", "run.started"])
    double, _ = runtime_double
    double.hold(first + second)
    async with running(projector_settings):
        await publish_events(test_broker, first + second)
        await wait_checkpoints(khala_pool, {f"run:a{unique}": 10, f"run:b{unique}": 2})
    before = await projection_state(khala_pool, org)
    store = RebuildStore(khala_pool)
    scope = RebuildScope(Projection.RUNS, org)

    double.failing.add(f"run:b{unique}")  # runtime fails half way through
    with pytest.raises(RuntimeUnavailable):
        await Rebuilder(store, reader, chunk=4).run(scope)
    [unfinished] = [r for r in await store.unfinished() if r.scope == scope]
    staged = await khala_pool.fetch(
        "SELECT stream_id, staged_seq FROM rebuild_streams WHERE rebuild_id = $1",
        unfinished.rebuild_id,
    )
    assert {r["stream_id"]: r["staged_seq"] for r in staged} == {
        f"run:a{unique}": 10,
        f"run:b{unique}": 0,
    }
    # Nothing switched: readers still see the old epoch, complete.
    assert (await topic_head(khala_pool, f"org.{org}.run.a{unique}"))[0] == "1"
    # Another scope of the same org must wait for this one.
    with pytest.raises(RebuildError, match="unfinished"):
        await Rebuilder(store, reader).run(RebuildScope(Projection.RUNS, ""))

    double.failing.clear()
    double.calls.clear()
    report = await Rebuilder(store, reader, chunk=4).run(scope)
    assert report.resumed and report.rebuild_id == unfinished.rebuild_id
    assert all(sid != f"run:a{unique}" for sid, _, _ in double.calls)  # not read again
    assert await projection_state(khala_pool, org) == before
    frames = await replay(khala_pool, f"org.{org}.run.a{unique}", 0)
    assert [f.seq for f in frames] == list(range(1, 11))
    assert {f.epoch for f in frames} == {unfinished.epoch}


async def test_abandon_discards_the_staged_epoch(
    projector_settings, test_broker, khala_pool, runtime_double, reader, unique
):
    org = f"org{unique}"
    events = run_events(org, f"a{unique}", ["run.created", "run.started"])
    other = run_events(org, f"b{unique}", ["run.created"])
    double, _ = runtime_double
    double.hold(events + other)
    async with running(projector_settings):
        await publish_events(test_broker, events + other)
        await wait_checkpoints(khala_pool, {f"run:a{unique}": 2, f"run:b{unique}": 1})
    store, scope = RebuildStore(khala_pool), RebuildScope(Projection.RUNS, org)
    double.failing.add(f"run:b{unique}")
    with pytest.raises(RuntimeUnavailable):
        await Rebuilder(store, reader).run(scope)
    [rebuild] = [r for r in await store.unfinished() if r.scope == scope]
    assert await khala_pool.fetchval("SELECT count(*) FROM frames WHERE epoch = $1", rebuild.epoch)
    deleted = await Rebuilder(store, reader).abandon(scope)
    assert deleted > 0
    assert (
        await khala_pool.fetchval("SELECT count(*) FROM frames WHERE epoch = $1", rebuild.epoch)
        == 0
    )
    assert (
        await khala_pool.fetchval(
            "SELECT status FROM rebuilds WHERE rebuild_id = $1", rebuild.rebuild_id
        )
        == "abandoned"
    )
    assert await topic_head(khala_pool, f"org.{org}.run.a{unique}") == ("1", 2, 1)
    with pytest.raises(RebuildError, match="no unfinished"):
        await Rebuilder(store, reader).abandon(scope)


async def test_rebuild_command_reports_json_and_refuses_bad_input(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org = f"org{unique}"
    events = worker_events(org, f"w{unique}", ["worker.started", "worker.heartbeat"])
    double, _ = runtime_double
    double.hold(events)
    async with running(projector_settings):
        await publish_events(test_broker, events)
        await wait_checkpoints(khala_pool, {f"worker:w{unique}": 2})
    # The real command line: the JSON report alone on stdout, progress and logs on stderr.
    code, out, err = await run_cli(
        projector_env(projector_settings), "rebuild", "--projection", "workers", "--org", org
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["streams"], report["events_staged"], report["orgs_switched"]) == (1, 2, 1)
    assert "staging" in err and "switching" in err and "org switched" in err
    assert (await topic_head(khala_pool, f"org.{org}.workers"))[0] == report["epoch"]
    out_io, err_io = io.StringIO(), io.StringIO()
    assert await rebuild_command(projector_settings, "workers", org, out=out_io, err=err_io) == 0
    assert json.loads(out_io.getvalue())["epoch"] != report["epoch"]

    err = io.StringIO()
    assert await rebuild_command(projector_settings, "runs", "bad.org", err=err) == 2
    assert "--org" in err.getvalue()
    err = io.StringIO()
    assert await rebuild_command(projector_settings, "runs", org, abandon=True, err=err) == 1
    assert "no unfinished rebuild" in err.getvalue()


@pytest.mark.timeout(120)
async def test_rebuild_under_continuous_load_keeps_every_stream_exact(
    projector_settings, test_broker, khala_pool, runtime_double, reader, unique
):
    org = f"org{unique}"
    double, _ = runtime_double
    logs = {
        f"r{i}{unique}": run_events(org, f"r{i}{unique}", ["run.created"] + ["run.output"] * 59)
        for i in range(5)
    }
    sent = dict.fromkeys(logs, 0)
    stop = asyncio.Event()

    async def append_forever() -> None:
        """Runtime appending to every run (r4 starts late) until told to stop."""
        step = 0
        while not stop.is_set() or any(sent[r] < len(ev) for r, ev in logs.items()):
            for run_id, events in logs.items():
                if run_id.startswith("r4") and step < 20:
                    continue
                if sent[run_id] < len(events):
                    event = events[sent[run_id]]
                    double.hold([event])
                    await publish_events(test_broker, [event])
                    sent[run_id] += 1
            step += 1
            await asyncio.sleep(0.01)

    async with running(projector_settings):
        load = asyncio.create_task(append_forever())
        try:
            await wait_for(_sent_some(sent), what="some traffic before the rebuild")
            # Load keeps running through staging and the switch (a stress test;
            # test_live_traffic_during_a_rebuild_... pins the catch-up exactly).
            report = await Rebuilder(RebuildStore(khala_pool), reader, chunk=2).run(
                RebuildScope(Projection.RUNS, org)
            )
        finally:
            stop.set()
            await load
        await wait_checkpoints(khala_pool, {f"run:{r}": len(ev) for r, ev in logs.items()})

    assert report.streams >= 4
    for run_id, events in logs.items():
        topic = f"org.{org}.run.{run_id}"
        frames = await replay(khala_pool, topic, 0)
        assert [f.seq for f in frames] == list(range(1, len(events) + 1)), run_id
        assert [RuntimeEvent.FromString(f.payload_bytes) for f in frames] == events
        if frames[0].epoch != report.epoch:
            # Only a run whose first event came after its org's switch stays in "1".
            assert run_id.startswith("r4") and {f.epoch for f in frames} == {"1"}
        assert await epochs_of(khala_pool, topic) == {frames[0].epoch}
    docs = await snapshot(khala_pool, f"org.{org}.runs")
    assert {k: f.payload_bytes for k, f in docs.items()} == {
        run_id: fold(stream_of(ev[0]), None, ev).doc for run_id, ev in logs.items()
    }
    assert {f.epoch for f in docs.values()} == {report.epoch}
    state = await projection_state(khala_pool, org)
    for run_id, events in logs.items():
        assert state[f"run:{run_id}"][0] == len(events)
        assert state[f"run:{run_id}"][3] == fold(stream_of(events[0]), None, events).doc


def _sent_some(sent: dict[str, int]):
    async def check() -> bool:
        return sum(sent.values()) >= 20

    return check
