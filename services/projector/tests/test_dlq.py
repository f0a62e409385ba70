"""Integration: poison messages reach khala.projector.dlq, are counted and
sampled, can be listed without being consumed, and replayed back to
khala.runtime.events with the `khala-projector dlq` CLI; the projector keeps going."""

from __future__ import annotations

import io
import json

import pytest
from projector_testkit import (
    metric_value,
    projector_env,
    publish_events,
    run_cli,
    run_events,
    wait_checkpoints,
    wait_for,
)

from khala_projector.adapters.dlq import DeadLetterQueue
from khala_projector.app import running
from khala_projector.handlers.cli import dlq_command

pytestmark = pytest.mark.integration


async def test_dead_letters_are_listed_and_replayed(
    projector_settings, test_broker, khala_pool, runtime_double, unique
):
    org, stuck, fine = f"org{unique}", f"stuck{unique}", f"fine{unique}"
    double, _ = runtime_double
    events = run_events(org, stuck, ["run.created", "run.started", "run.output"])
    double.hold(events)
    double.failing.add(f"run:{stuck}")  # runtime cannot fill the gap before seq 3, for now
    env = projector_env(projector_settings)
    topology = test_broker.topology

    async with (
        running(projector_settings) as app,
        DeadLetterQueue(projector_settings.amqp_url, topology) as dlq,
    ):

        async def depth_is(n: int):
            async def check() -> bool:
                return await dlq.depth() == n

            return check

        await test_broker.publish_raw(
            topology.runtime_events, f"{org}.run", b"\x0a\xff", type_name="x", message_id="junk"
        )
        await wait_for(await depth_is(1), what="the garbage in the DLQ")
        await publish_events(test_broker, [events[2]])
        await wait_for(await depth_is(2), what="the unfillable event in the DLQ")

        # The projector keeps going meanwhile.
        other = run_events(org, fine, ["run.created", "run.started"])
        await publish_events(test_broker, other)
        await wait_checkpoints(khala_pool, {f"run:{fine}": 2})

        await app.services.sampler.sample_once()
        assert metric_value("khala_projector_dlq_depth") == 2

        code, out, err = await run_cli(env, "dlq", "list")
        assert code == 0, err
        listed = [json.loads(line) for line in out.splitlines()]
        assert [entry["message_id"] for entry in listed] == ["junk", events[2].event_id]
        junk, event = listed
        assert junk["invalid"] and junk["routing_key"] == f"{org}.run"
        assert (event["stream_id"], event["stream_seq"], event["event_type"]) == (
            f"run:{stuck}",
            3,
            "run.output",
        )
        assert event["routing_key"] == f"{org}.run" and event["invalid"] == ""
        assert event["reason"] and event["queue"] == topology.projector_queue
        assert "2 messages" in err
        assert await dlq.depth() == 2  # listing consumed nothing

        out_io, err_io = io.StringIO(), io.StringIO()
        code = await dlq_command(projector_settings, "list", 1, out=out_io, err=err_io)
        assert (code, len(out_io.getvalue().splitlines())) == (0, 1)
        assert await dlq_command(projector_settings, "list", -1, err=err_io) == 2
        assert "--limit must be >= 0" in err_io.getvalue()

        # Runtime is back: replay one message, then the rest. (`list` returns the
        # messages it looked at, which may reorder a quorum queue: no order assumed.)
        double.failing.clear()
        code, out, err = await run_cli(env, "dlq", "replay", "--limit", "1")
        assert code == 0, err
        first = [json.loads(line)["message_id"] for line in out.splitlines()]
        assert len(first) == 1 and "replayed 1 messages" in err
        code, out, err = await run_cli(env, "dlq", "replay")
        assert code == 0, err
        rest = [json.loads(line)["message_id"] for line in out.splitlines()]
        # (The garbage may already be back from its first replay: a set, not a list.)
        assert set(first + rest) == {"junk", events[2].event_id}
        await wait_checkpoints(khala_pool, {f"run:{stuck}": 3})
        # The garbage is still garbage: it comes back to the DLQ, nothing else does.
        await wait_for(await depth_is(1), what="the garbage back in the DLQ")
        [again] = await dlq.peek(10)
        assert again.message_id == "junk" and again.invalid
