"""RunSummary reducer: a pure fold of a run's events into its summary document.

Every field is a function of the events alone (`occurred_at_ms` is runtime's
commit clock, the only time seen here), so replaying the same log always
reproduces the same document byte for byte.
"""

from __future__ import annotations

from khala_projector.domain.events import fold_envelope, payload_of, text_field, truncate_utf8
from openagents.codex.v1 import summaries_pb2
from openagents.codex.v1.summaries_pb2 import RunSummary
from openagents.runtime.v1.events_pb2 import RuntimeEvent

MAX_OUTPUT_BYTES = 1024
MAX_REASON_BYTES = 1024

STATUS_BY_TYPE: dict[str, summaries_pb2.RunStatus] = {
    "run.created": summaries_pb2.RUN_STATUS_CREATED,
    "run.started": summaries_pb2.RUN_STATUS_RUNNING,
    "run.paused": summaries_pb2.RUN_STATUS_PAUSED,
    "run.resumed": summaries_pb2.RUN_STATUS_RUNNING,
    "run.completed": summaries_pb2.RUN_STATUS_SUCCEEDED,
    "run.failed": summaries_pb2.RUN_STATUS_FAILED,
    "run.canceled": summaries_pb2.RUN_STATUS_CANCELED,
}
TERMINAL_TYPES = frozenset({"run.completed", "run.failed", "run.canceled"})
# Payload fields read for run.output text, in order of preference.
OUTPUT_FIELDS = ("text", "output", "content")


def apply_run_event(doc: RunSummary, event: RuntimeEvent) -> RunSummary:
    """The summary after folding `event` into `doc` (`doc` is left unchanged)."""
    out = RunSummary()
    out.CopyFrom(doc)
    payload = payload_of(event)
    out.run_id = event.stream_id.partition(":")[2]
    fold_envelope(out, event, STATUS_BY_TYPE)
    if event.type == "run.created":
        title = text_field(payload, "title")
        if title is not None:
            out.title = title
    elif event.type == "run.output":
        out.output_count += 1
        out.last_output = truncate_utf8(text_field(payload, *OUTPUT_FIELDS) or "", MAX_OUTPUT_BYTES)
    elif event.type in TERMINAL_TYPES:
        reason = text_field(payload, "reason")
        if reason is not None:
            out.end_reason = truncate_utf8(reason, MAX_REASON_BYTES)
    return out
