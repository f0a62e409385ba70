"""Folding a contiguous run of stream events into a document and topic frames.

Deterministic: the document bytes are `SerializeToString(deterministic=True)`,
the hash is their sha256 hex, and the frames (their topics, kinds, keys and
payloads) depend only on the stream and its events. Topic seqs and
`published_at_ms` are assigned by storage at commit.

Per call, every event yields one EVENT frame on its event topic, in stream
order, then the document yields one DOC_UPSERT frame with its state after the
last event (the doc topic is compacted by key, so intermediate states of one
batch are not worth a frame).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from khala_common import topics
from khala_projector.domain.events import StreamKind, StreamRef
from khala_projector.domain.run_reducer import apply_run_event
from khala_projector.domain.worker_reducer import apply_worker_event
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary, RunSummary
from openagents.runtime.v1.events_pb2 import RuntimeEvent
from openagents.sync.v1 import frames_pb2

# Bump when a reducer changes what it derives; stored with every checkpoint.
PROJECTION_VERSION = 1
RUN_SUMMARY_SCHEMA = "openagents.codex.v1.RunSummary@1"
WORKER_SUMMARY_SCHEMA = "openagents.codex.v1.CodexWorkerSummary@1"
RUNTIME_EVENT_SCHEMA = "openagents.runtime.v1.RuntimeEvent@1"

Document = RunSummary | CodexWorkerSummary


class Projection(StrEnum):
    """A projection's name, the `documents.projection` column."""

    RUNS = "runs"
    WORKERS = "workers"

    @property
    def kind(self) -> StreamKind:
        """The kind of stream this projection folds."""
        return StreamKind.RUN if self is Projection.RUNS else StreamKind.WORKER

    @property
    def stream_prefix(self) -> str:
        """`run:` or `worker:`, the prefix of its streams' ids."""
        return f"{self.kind.value}:"


def projection_of(stream: StreamRef) -> Projection:
    """Which projection a stream feeds."""
    return Projection.RUNS if stream.kind is StreamKind.RUN else Projection.WORKERS


@dataclass(frozen=True)
class FrameDraft:
    """A frame before storage gives it a seq, an epoch and a commit time."""

    topic: str
    kind: frames_pb2.FrameKind
    key: str
    payload: bytes
    schema_version: str


@dataclass(frozen=True)
class Folded:
    """The outcome of folding events: the new document and the frames to append."""

    stream: StreamRef
    projection: Projection
    doc: bytes
    doc_hash: str
    last_seq: int
    # occurred_at_ms of the last event folded in (runtime's clock, not ours).
    last_event_at_ms: int
    frames: tuple[FrameDraft, ...]

    def doc_only(self) -> Folded:
        """The same fold with only its DOC_UPSERT frame (a document repair)."""
        drafts = tuple(d for d in self.frames if d.kind == frames_pb2.FRAME_KIND_DOC_UPSERT)
        return replace(self, frames=drafts)


def serialize(doc: Document) -> bytes:
    """Deterministic bytes of a document."""
    return doc.SerializeToString(deterministic=True)


def doc_hash(doc_bytes: bytes) -> str:
    """sha256 hex of a document's deterministic bytes."""
    return hashlib.sha256(doc_bytes).hexdigest()


def load_doc(stream: StreamRef, stored: bytes | None) -> Document:
    """The stored document of `stream`, or an empty one."""
    doc: Document = RunSummary() if stream.kind is StreamKind.RUN else CodexWorkerSummary()
    if stored:
        doc.ParseFromString(stored)
    return doc


def reduce(stream: StreamRef, doc: Document, events: Sequence[RuntimeEvent]) -> Document:
    """Fold `events` into `doc` with the stream's reducer."""
    for event in events:
        if isinstance(doc, RunSummary):
            doc = apply_run_event(doc, event)
        else:
            doc = apply_worker_event(doc, event)
    return doc


def event_topic(stream: StreamRef) -> str:
    """`org.<org>.run.<id>` or `org.<org>.worker.<id>`."""
    if stream.kind is StreamKind.RUN:
        return topics.run_topic(stream.org_id, stream.subject_id)
    return topics.worker_topic(stream.org_id, stream.subject_id)


def doc_topic(stream: StreamRef) -> str:
    """`org.<org>.runs` or `org.<org>.workers`."""
    if stream.kind is StreamKind.RUN:
        return topics.runs_topic(stream.org_id)
    return topics.workers_topic(stream.org_id)


def fold(stream: StreamRef, stored: bytes | None, events: Sequence[RuntimeEvent]) -> Folded:
    """Fold contiguous `events` into the stored document; returns doc, hash and frames."""
    if not events:
        raise ValueError("fold needs at least one event")
    doc = reduce(stream, load_doc(stream, stored), events)
    data = serialize(doc)
    schema = RUN_SUMMARY_SCHEMA if stream.kind is StreamKind.RUN else WORKER_SUMMARY_SCHEMA
    drafts = [
        FrameDraft(
            event_topic(stream),
            frames_pb2.FRAME_KIND_EVENT,
            event.event_id,
            event.SerializeToString(deterministic=True),
            RUNTIME_EVENT_SCHEMA,
        )
        for event in events
    ]
    drafts.append(
        FrameDraft(
            doc_topic(stream), frames_pb2.FRAME_KIND_DOC_UPSERT, stream.subject_id, data, schema
        )
    )
    return Folded(
        stream=stream,
        projection=projection_of(stream),
        doc=data,
        doc_hash=doc_hash(data),
        last_seq=events[-1].stream_seq,
        last_event_at_ms=events[-1].occurred_at_ms,
        frames=tuple(drafts),
    )
