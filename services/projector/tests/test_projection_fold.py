"""Unit: folding is deterministic and replay-equivalent; frames are well formed."""

from __future__ import annotations

import hashlib

from projector_testkit import make_event, run_events

from khala_projector.domain.events import stream_of
from khala_projector.domain.projection import (
    RUN_SUMMARY_SCHEMA,
    RUNTIME_EVENT_SCHEMA,
    WORKER_SUMMARY_SCHEMA,
    Projection,
    fold,
)
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary, RunSummary
from openagents.runtime.v1.events_pb2 import RuntimeEvent
from openagents.sync.v1 import frames_pb2

TYPES = ["run.created", "run.started", "run.output", "run.paused", "run.resumed", "run.completed"]


def test_same_events_give_same_bytes_and_hash():
    events = run_events("acme", "r1", TYPES)
    stream = stream_of(events[0])
    first = fold(stream, None, events)
    # Fresh copies of the events, parsed back from bytes: no shared state.
    copies = [RuntimeEvent.FromString(e.SerializeToString()) for e in events]
    second = fold(stream, None, copies)
    assert first.doc == second.doc
    assert first.doc_hash == second.doc_hash == hashlib.sha256(first.doc).hexdigest()
    assert first.frames == second.frames


def test_folding_in_batches_equals_folding_at_once():
    events = run_events("acme", "r1", TYPES)
    stream = stream_of(events[0])
    whole = fold(stream, None, events)
    doc = None
    for event in events:
        doc = fold(stream, doc, [event]).doc
    assert doc == whole.doc
    partial = fold(stream, None, events[:2])
    assert fold(stream, partial.doc, events[2:]).doc_hash == whole.doc_hash


def test_replaying_the_event_frames_reproduces_the_document():
    events = run_events("acme", "r1", TYPES)
    stream = stream_of(events[0])
    folded = fold(stream, None, events)
    replayed = [
        RuntimeEvent.FromString(f.payload)
        for f in folded.frames
        if f.kind == frames_pb2.FRAME_KIND_EVENT
    ]
    assert fold(stream, None, replayed).doc == folded.doc


def test_run_frames_event_per_event_then_one_doc_upsert():
    events = run_events("acme", "r1", TYPES[:3])
    folded = fold(stream_of(events[0]), None, events)
    assert folded.projection is Projection.RUNS
    assert folded.last_seq == 3
    kinds = [(f.topic, f.kind, f.key, f.schema_version) for f in folded.frames]
    assert kinds == [
        ("org.acme.run.r1", frames_pb2.FRAME_KIND_EVENT, "ev-r1-1", RUNTIME_EVENT_SCHEMA),
        ("org.acme.run.r1", frames_pb2.FRAME_KIND_EVENT, "ev-r1-2", RUNTIME_EVENT_SCHEMA),
        ("org.acme.run.r1", frames_pb2.FRAME_KIND_EVENT, "ev-r1-3", RUNTIME_EVENT_SCHEMA),
        ("org.acme.runs", frames_pb2.FRAME_KIND_DOC_UPSERT, "r1", RUN_SUMMARY_SCHEMA),
    ]
    assert RuntimeEvent.FromString(folded.frames[0].payload) == events[0]
    assert RunSummary.FromString(folded.frames[-1].payload).event_count == 3


def test_worker_frames_use_worker_topics():
    events = [make_event("acme", "worker:w1", 1, "worker.started")]
    folded = fold(stream_of(events[0]), None, events)
    assert folded.projection is Projection.WORKERS
    assert [(f.topic, f.schema_version) for f in folded.frames] == [
        ("org.acme.worker.w1", RUNTIME_EVENT_SCHEMA),
        ("org.acme.workers", WORKER_SUMMARY_SCHEMA),
    ]
    assert CodexWorkerSummary.FromString(folded.doc).worker_id == "w1"
