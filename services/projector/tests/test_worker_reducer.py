"""Unit: the CodexWorkerSummary reducer (pure)."""

from __future__ import annotations

import pytest
from projector_testkit import BASE_MS, make_event

from khala_projector.domain.worker_reducer import (
    HEARTBEAT_STALE_AFTER_MS,
    apply_worker_event,
    heartbeat_state,
)
from openagents.codex.v1 import summaries_pb2 as s
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary


def fold(types_payloads):
    doc = CodexWorkerSummary()
    for seq, (type_, payload, at) in enumerate(types_payloads, start=1):
        doc = apply_worker_event(
            doc, make_event("acme", "worker:w1", seq, type_, payload, occurred_at_ms=at)
        )
    return doc


@pytest.mark.parametrize(
    ("types", "status"),
    [
        (["worker.heartbeat"], s.WORKER_STATUS_REGISTERED),
        (["worker.started"], s.WORKER_STATUS_RUNNING),
        (["worker.started", "worker.stopped"], s.WORKER_STATUS_STOPPED),
        (["worker.started", "worker.stopped", "worker.resumed"], s.WORKER_STATUS_RUNNING),
        (["worker.started", "worker.error"], s.WORKER_STATUS_ERROR),
        (["worker.started", "worker.event", "worker.request.received"], s.WORKER_STATUS_RUNNING),
    ],
)
def test_status(types, status):
    doc = fold([(t, {}, BASE_MS + i) for i, t in enumerate(types)])
    assert doc.status == status
    assert doc.event_count == len(types)
    assert doc.last_event_type == types[-1]


def test_counters_and_last_error():
    doc = fold(
        [
            ("worker.started", {}, BASE_MS),
            ("worker.heartbeat", {}, BASE_MS + 10),
            ("worker.request.received", {}, BASE_MS + 20),
            ("worker.error", {"error": "disk full"}, BASE_MS + 30),
            ("worker.heartbeat", {}, BASE_MS + 40),
        ]
    )
    assert (doc.worker_id, doc.org_id) == ("w1", "acme")
    assert (doc.heartbeat_count, doc.request_count, doc.error_count) == (2, 1, 1)
    assert doc.last_error == "disk full"
    assert doc.last_heartbeat_at_ms == BASE_MS + 40
    assert (doc.created_at_ms, doc.updated_at_ms) == (BASE_MS, BASE_MS + 40)


def test_heartbeat_state_is_judged_against_the_latest_event():
    missing = fold([("worker.started", {}, BASE_MS)])
    assert missing.heartbeat_state == s.HEARTBEAT_STATE_MISSING
    fresh = fold([("worker.heartbeat", {}, BASE_MS)])
    assert fresh.heartbeat_state == s.HEARTBEAT_STATE_FRESH
    stale = fold(
        [
            ("worker.heartbeat", {}, BASE_MS),
            ("worker.event", {}, BASE_MS + HEARTBEAT_STALE_AFTER_MS + 1),
        ]
    )
    assert stale.heartbeat_state == s.HEARTBEAT_STATE_STALE


def test_heartbeat_state_boundaries():
    assert heartbeat_state(0, BASE_MS) == s.HEARTBEAT_STATE_MISSING
    assert heartbeat_state(BASE_MS, BASE_MS + HEARTBEAT_STALE_AFTER_MS) == s.HEARTBEAT_STATE_FRESH
    assert (
        heartbeat_state(BASE_MS, BASE_MS + HEARTBEAT_STALE_AFTER_MS + 1) == s.HEARTBEAT_STATE_STALE
    )
