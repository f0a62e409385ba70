"""Unit: which bodies the projector accepts as runtime events."""

from __future__ import annotations

import pytest
from projector_testkit import make_event

from khala_projector.domain.events import (
    InvalidEvent,
    StreamKind,
    decode_event,
    stream_of,
    truncate_utf8,
)
from openagents.runtime.v1 import events_pb2


def test_valid_run_and_worker_events():
    run = stream_of(make_event("acme", "run:r-1", 1, "run.created"))
    assert (run.stream_id, run.kind, run.org_id, run.subject_id) == (
        "run:r-1",
        StreamKind.RUN,
        "acme",
        "r-1",
    )
    worker = stream_of(make_event("acme", "worker:w_1", 3, "worker.heartbeat"))
    assert worker.kind is StreamKind.WORKER


def test_decode_round_trip():
    event = make_event("acme", "run:r1", 1, "run.created")
    decoded, stream = decode_event(event.SerializeToString())
    assert decoded == event
    assert stream.subject_id == "r1"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: setattr(e, "stream_id", "job:r1"),
        lambda e: setattr(e, "stream_id", "run:"),
        lambda e: setattr(e, "stream_id", "r1"),
        lambda e: setattr(e, "stream_kind", events_pb2.STREAM_KIND_WORKER),
        lambda e: setattr(e, "subject_id", "r2"),
        lambda e: setattr(e, "org_id", ""),
        lambda e: setattr(e, "org_id", "a.b"),
        lambda e: setattr(e, "org_id", "a*"),
        lambda e: setattr(e, "stream_id", "run:a.b"),
        lambda e: setattr(e, "stream_seq", 0),
        lambda e: setattr(e, "event_id", ""),
        lambda e: setattr(e, "type", ""),
    ],
)
def test_invalid_events_are_refused(mutate):
    event = make_event("acme", "run:r1", 1, "run.created")
    event.subject_id = "r1"
    mutate(event)
    with pytest.raises(InvalidEvent):
        stream_of(event)


@pytest.mark.parametrize("body", [b"\x0a\xff", b"\xff\xff\xff", b"\x0a\x02\xc3\x28"])
def test_undecodable_bodies_are_refused(body):
    with pytest.raises(InvalidEvent):
        decode_event(body)


def test_empty_body_is_an_event_without_stream():
    with pytest.raises(InvalidEvent):
        decode_event(b"")


def test_truncate_utf8():
    assert truncate_utf8("abc", 10) == "abc"
    assert truncate_utf8("aé", 2) == "a"
    assert truncate_utf8("日本語", 7) == "日本"
