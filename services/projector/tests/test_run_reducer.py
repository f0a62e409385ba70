"""Unit: the RunSummary reducer (pure)."""

from __future__ import annotations

import pytest
from projector_testkit import BASE_MS, make_event, run_events

from khala_projector.domain.run_reducer import MAX_OUTPUT_BYTES, apply_run_event
from openagents.codex.v1 import summaries_pb2 as s
from openagents.codex.v1.summaries_pb2 import RunSummary


def fold(events):
    doc = RunSummary()
    for event in events:
        doc = apply_run_event(doc, event)
    return doc


@pytest.mark.parametrize(
    ("types", "status"),
    [
        (["run.created"], s.RUN_STATUS_CREATED),
        (["run.created", "run.started"], s.RUN_STATUS_RUNNING),
        (["run.created", "run.started", "run.paused"], s.RUN_STATUS_PAUSED),
        (["run.created", "run.started", "run.paused", "run.resumed"], s.RUN_STATUS_RUNNING),
        (["run.created", "run.started", "run.completed"], s.RUN_STATUS_SUCCEEDED),
        (["run.created", "run.started", "run.failed"], s.RUN_STATUS_FAILED),
        (["run.created", "run.canceled"], s.RUN_STATUS_CANCELED),
        (["run.created", "run.started", "run.output"], s.RUN_STATUS_RUNNING),
        (["run.created", "run.something_new"], s.RUN_STATUS_CREATED),
    ],
)
def test_status_follows_lifecycle_events(types, status):
    doc = fold(run_events("acme", "r1", types))
    assert doc.status == status
    assert doc.event_count == len(types)
    assert doc.last_seq == len(types)
    assert doc.last_event_type == types[-1]


def test_identity_title_and_times():
    events = run_events("acme", "r1", ["run.created", "run.started", "run.output"])
    doc = fold(events)
    assert (doc.run_id, doc.org_id, doc.title) == ("r1", "acme", "Run r1")
    assert doc.created_at_ms == BASE_MS + 1000
    assert doc.updated_at_ms == BASE_MS + 3000


def test_output_counts_and_keeps_latest_text():
    events = [
        make_event("acme", "run:r1", 1, "run.created", {"title": "t"}),
        make_event("acme", "run:r1", 2, "run.output", {"text": "first"}),
        make_event("acme", "run:r1", 3, "run.output", {"text": "second"}),
    ]
    doc = fold(events)
    assert doc.output_count == 2
    assert doc.last_output == "second"


def test_output_is_truncated_to_1kib_without_splitting_a_character():
    text = "a" * (MAX_OUTPUT_BYTES - 1) + "é" + "tail"  # é is 2 bytes, straddles the limit
    doc = fold([make_event("acme", "run:r1", 1, "run.output", {"text": text})])
    assert len(doc.last_output.encode()) <= MAX_OUTPUT_BYTES
    assert doc.last_output == "a" * (MAX_OUTPUT_BYTES - 1)
    short = fold([make_event("acme", "run:r1", 1, "run.output", {"text": "é" * 10})])
    assert short.last_output == "é" * 10


def test_non_string_output_is_canonical_json():
    doc = fold([make_event("acme", "run:r1", 1, "run.output", {"text": {"b": 1, "a": [1, 2]}})])
    assert doc.last_output == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize("end", ["run.failed", "run.canceled", "run.completed"])
def test_end_reason_from_payload(end):
    events = [
        make_event("acme", "run:r1", 1, "run.created", {}),
        make_event("acme", "run:r1", 2, end, {"reason": "why not"}),
    ]
    assert fold(events).end_reason == "why not"


def test_bad_payload_is_tolerated_deterministically():
    event = make_event("acme", "run:r1", 1, "run.created")
    event.payload_json = b"not json"
    doc = fold([event])
    assert doc.title == ""
    assert doc.status == s.RUN_STATUS_CREATED


def test_input_document_is_not_mutated():
    doc = RunSummary(run_id="r1", event_count=3)
    apply_run_event(doc, make_event("acme", "run:r1", 4, "run.started"))
    assert doc == RunSummary(run_id="r1", event_count=3)
