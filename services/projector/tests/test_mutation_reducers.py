"""Unit: counters and empty texts of the run and worker reducers (docs/mutation.md)."""

from __future__ import annotations

from projector_testkit import make_event

from khala_projector.domain.run_reducer import apply_run_event
from khala_projector.domain.worker_reducer import apply_worker_event
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary, RunSummary


def test_run_output_without_text_clears_the_last_output():
    doc = apply_run_event(RunSummary(), make_event("acme", "run:r1", 1, "run.created"))
    doc = apply_run_event(doc, make_event("acme", "run:r1", 2, "run.output", {"text": "hi"}))
    assert doc.last_output == "hi"
    doc = apply_run_event(doc, make_event("acme", "run:r1", 3, "run.output", {"other": 1}))
    assert doc.last_output == ""


def _worker(types_payloads: list[tuple[str, dict[str, object] | None]]) -> CodexWorkerSummary:
    doc = CodexWorkerSummary()
    for seq, (type_, payload) in enumerate(types_payloads, start=1):
        doc = apply_worker_event(doc, make_event("acme", "worker:w1", seq, type_, payload))
    return doc


def test_worker_counts_every_request_and_error():
    doc = _worker(
        [
            ("worker.registered", None),
            ("worker.request.received", None),
            ("worker.request.received", None),
            ("worker.error", {"error": "boom"}),
            ("worker.started", None),
            ("worker.error", None),
            ("worker.request.received", None),
        ]
    )
    assert (doc.request_count, doc.error_count) == (3, 2)
    # An error without a message clears the previous one.
    assert doc.last_error == ""
