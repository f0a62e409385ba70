"""Unit: rebuild scopes and epochs, projection status lag, the progress bar,
dead-letter descriptions and the CLI's argument parsing."""

from __future__ import annotations

import io
import json
import re

import pytest
from projector_testkit import make_event

from khala_common.topology import TYPE_HEADER
from khala_projector.__main__ import _parse_args
from khala_projector.domain.dead_letters import describe, original_routing_key, replay_headers
from khala_projector.domain.epochs import epoch_from, new_epoch
from khala_projector.domain.projection import Projection
from khala_projector.domain.rebuild import RebuildScope
from khala_projector.domain.status import stream_status
from khala_projector.handlers.progress import ProgressBar, render


def test_epochs_are_time_ordered_63_bit_and_never_the_legacy_ones():
    assert epoch_from(1, 5) == str(1 << 20 | 5)
    assert int(epoch_from(1733390000000, (1 << 20) - 1)) < 2**63
    with pytest.raises(ValueError):
        epoch_from(1 << 43, 0)  # would not fit in 63 bits
    with pytest.raises(ValueError):
        epoch_from(1, 1 << 20)
    minted = [new_epoch() for _ in range(1000)]
    assert len(set(minted)) == 1000
    assert all(0 < int(e) < 2**63 and int(e) >> 20 > 1_700_000_000_000 for e in minted)
    assert not {"1", "2", "3"} & set(minted)  # never an initial or sequence-made epoch


def test_scopes_overlap_on_the_same_projection_and_org():
    runs_a = RebuildScope(Projection.RUNS, "a")
    assert runs_a.overlaps(RebuildScope(Projection.RUNS, "a"))
    assert runs_a.overlaps(RebuildScope(Projection.RUNS, ""))
    assert RebuildScope(Projection.RUNS, "").overlaps(runs_a)
    assert not runs_a.overlaps(RebuildScope(Projection.RUNS, "b"))
    assert not runs_a.overlaps(RebuildScope(Projection.WORKERS, "a"))
    assert runs_a.describe() == "runs org=a"
    assert RebuildScope(Projection.WORKERS).describe() == "workers (every org)"
    assert Projection.WORKERS.stream_prefix == "worker:"


def test_status_lag_in_events_and_seconds():
    lagging = stream_status("run:r", head_seq=10, checkpoint_seq=7, checkpoint_at_ms=5_000)
    assert (lagging.in_sync, lagging.lag_events) == (False, 3)
    assert lagging.lag_seconds(head_at_ms=8_500) == 3.5
    assert lagging.lag_seconds(head_at_ms=0) == 0.0  # head time unknown
    assert lagging.lag_seconds(head_at_ms=4_000) == 0.0  # clocks never make it negative
    synced = stream_status("run:r", head_seq=7, checkpoint_seq=7, checkpoint_at_ms=5_000)
    assert synced.in_sync and synced.lag_seconds(head_at_ms=9_000) == 0.0
    unknown = stream_status("run:r", head_seq=3, checkpoint_seq=0)
    assert (unknown.lag_events, unknown.lag_seconds(head_at_ms=9_000)) == (3, 0.0)


def test_progress_rendering():
    line = render("staging", 5, 10, "40 events", 62.0)
    assert line.startswith("staging [" + "#" * 15 + "-" * 15 + "]  50%  5/10")
    assert line.endswith("40 events  1m02s")
    assert "100%" in render("switching", 0, 0, "", 0)


def test_progress_bar_on_a_pipe_prints_lines_at_most_every_interval():
    out = io.StringIO()
    now = [0.0]
    bar = ProgressBar(out, interactive=False, line_interval_s=5, clock=lambda: now[0])
    bar.update("staging", 1, 4)
    now[0] = 1
    bar.update("staging", 2, 4)  # too soon: skipped
    now[0] = 6
    bar.update("staging", 3, 4)
    now[0] = 6.5
    bar.update("staging", 4, 4)  # the end is always shown
    bar.note("done")
    lines = out.getvalue().splitlines()
    assert [re.search(r"\d+/4", line).group() for line in lines[:3]] == ["1/4", "3/4", "4/4"]
    assert lines[3] == "done"


def test_progress_bar_on_a_terminal_redraws_one_line():
    out = io.StringIO()
    bar = ProgressBar(out, interactive=True)
    bar.update("staging", 1, 2)
    bar.update("staging", 2, 2)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1


DEATH = {
    "x-death": [
        {
            "count": 5,
            "reason": "delivery_limit",
            "queue": "khala.projector",
            "exchange": "khala.runtime.events",
            "routing-keys": [b"acme.run"],
        }
    ],
    "x-first-death-reason": "delivery_limit",
    "x-delivery-count": 5,
    TYPE_HEADER: "openagents.runtime.v1.RuntimeEvent",
    "traceparent": "00-abc-def-01",
}


def test_a_dead_event_is_described():
    event = make_event("acme", "run:r1", 3, "run.output")
    letter = describe(event.SerializeToString(), DEATH, "", "ev-r1-3")
    assert (letter.routing_key, letter.reason, letter.deaths, letter.queue) == (
        "acme.run",
        "delivery_limit",
        5,
        "khala.projector",
    )
    assert (letter.stream_id, letter.stream_seq, letter.event_type, letter.invalid) == (
        "run:r1",
        3,
        "run.output",
        "",
    )
    assert json.loads(letter.to_json())["message_id"] == "ev-r1-3"


def test_garbage_is_described_as_invalid():
    letter = describe(b"\x0a\xff", {}, "acme.run", None)
    assert letter.invalid and letter.routing_key == "acme.run" and letter.message_id == ""
    assert (letter.reason, letter.deaths, letter.stream_id) == ("", 0, "")


def test_replay_drops_only_dead_lettering_headers():
    assert replay_headers(DEATH) == {
        TYPE_HEADER: "openagents.runtime.v1.RuntimeEvent",
        "traceparent": "00-abc-def-01",
    }
    assert original_routing_key({}, "fallback") == "fallback"


def test_cli_arguments():
    assert _parse_args([]).command == "serve"
    assert _parse_args(["migrate"]).command == "migrate"
    args = _parse_args(["rebuild", "--projection", "workers", "--org", "acme"])
    assert (args.command, args.projection, args.org, args.abandon) == (
        "rebuild",
        "workers",
        "acme",
        False,
    )
    assert _parse_args(["rebuild", "--projection", "runs", "--abandon"]).abandon
    assert (_parse_args(["dlq", "list"]).limit, _parse_args(["dlq", "replay"]).limit) == (100, 0)
    assert _parse_args(["dlq", "replay", "--limit", "7"]).limit == 7
    for bad in (["rebuild"], ["rebuild", "--projection", "docs"], ["dlq"], ["dlq", "drop"]):
        with pytest.raises(SystemExit):
            _parse_args(bad)
