"""Integration, real process: a projector SIGKILLed between commit and publish
publishes the committed frames when it starts again (republish-on-start).

The crash is injected with the test-only hook KHALA_PROJECTOR_TEST_CRASH_AFTER_COMMIT=n
(the process SIGKILLs itself right after its nth commit, before publishing it).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from projector_testkit import (
    FanoutTap,
    checkpoint_seq,
    projector_env,
    publish_events,
    run_events,
    wait_checkpoints,
    wait_for,
)

pytestmark = pytest.mark.integration


async def start_projector(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "khala_projector",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.mark.timeout(120)
async def test_frames_committed_before_a_sigkill_are_published_on_restart(
    projector_settings, test_broker, khala_pool, unique
):
    org, run_id = f"org{unique}", f"run{unique}"
    events = run_events(org, run_id, ["run.created", "run.started", "run.output"])
    sid, run_topic, runs_topic = f"run:{run_id}", f"org.{org}.run.{run_id}", f"org.{org}.runs"
    # Declare the queue now so events published before the process is up wait for it.
    await test_broker.declare_projector_queue(projector_settings.delivery_limit)
    tap = await FanoutTap.open(test_broker, [run_topic, runs_topic])
    env = projector_env(projector_settings)
    first = await start_projector({**env, "KHALA_PROJECTOR_TEST_CRASH_AFTER_COMMIT": "2"})
    second = None
    try:
        await publish_events(test_broker, events[:1])
        await wait_checkpoints(khala_pool, {sid: 1})
        await tap.wait(run_topic, 1)  # commit 1 was published normally

        await publish_events(test_broker, events[1:2])
        code = await asyncio.wait_for(first.wait(), 30)
        assert code == -signal.SIGKILL
        # Commit 2 happened, its publication did not.
        assert await checkpoint_seq(khala_pool, sid) == 2
        crashed = await khala_pool.fetch(
            "SELECT topic, seq, frame_bytes, frame_id FROM frames"
            " WHERE topic = ANY($1::text[]) ORDER BY frame_id",
            [run_topic, runs_topic],
        )
        cursor = await khala_pool.fetchval("SELECT last_frame_id FROM publish_cursor")
        unpublished = [r for r in crashed if r["frame_id"] > cursor]
        # The stored cursor may lag the last publish by up to CURSOR_WRITE_S: frames
        # above it are republished (duplicates for gateways), never skipped.
        assert {(run_topic, 2), (runs_topic, 2)} <= {(r["topic"], r["seq"]) for r in unpublished}
        await asyncio.sleep(0.5)
        assert [f.seq for f in tap.frames(run_topic)] == [1]

        second = await start_projector(env)
        await tap.wait(run_topic, 2)
        await tap.wait(runs_topic, 2)
        bodies = set(tap.raw_frames())
        assert {r["frame_bytes"] for r in unpublished} <= bodies

        # The redelivered event 2 is a duplicate; the projector carries on.
        await publish_events(test_broker, events[2:])
        await wait_checkpoints(khala_pool, {sid: 3})

        async def third_arrived() -> bool:
            return 3 in [f.seq for f in tap.frames(run_topic)]

        await wait_for(third_arrived, what="frame 3 on the fanout")
        seqs = [f.seq for f in tap.frames(run_topic)]
        # Republished frames may repeat (gateways drop seq <= last sent); new ones follow.
        assert sorted(set(seqs)) == [1, 2, 3] and seqs[-1] == 3

        async def cursor_past_the_crash() -> bool:
            cursor = await khala_pool.fetchval("SELECT last_frame_id FROM publish_cursor")
            return bool(cursor >= max(r["frame_id"] for r in crashed))

        await wait_for(cursor_past_the_crash, what="the publish cursor past the crashed commit")
    finally:
        await stop(first)
        if second is not None:
            await stop(second)
            assert second.returncode == 0
        await tap.close()
