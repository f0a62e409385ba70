"""CodexWorkerSummary reducer: a pure fold of a worker's events.

Heartbeat state is judged against the latest event's `occurred_at_ms`, never a
wall clock, so the document stays a pure function of the log; readers
re-derive freshness against their own clock from `last_heartbeat_at_ms`.
"""

from __future__ import annotations

from khala_projector.domain.events import fold_envelope, payload_of, text_field, truncate_utf8
from openagents.codex.v1 import summaries_pb2
from openagents.codex.v1.summaries_pb2 import CodexWorkerSummary
from openagents.runtime.v1.events_pb2 import RuntimeEvent

# A heartbeat older than this (relative to the latest event) reads as stale.
HEARTBEAT_STALE_AFTER_MS = 60_000
MAX_ERROR_BYTES = 1024
ERROR_FIELDS = ("error", "message", "reason")

STATUS_BY_TYPE: dict[str, summaries_pb2.WorkerStatus] = {
    "worker.created": summaries_pb2.WORKER_STATUS_REGISTERED,
    "worker.registered": summaries_pb2.WORKER_STATUS_REGISTERED,
    "worker.started": summaries_pb2.WORKER_STATUS_RUNNING,
    "worker.resumed": summaries_pb2.WORKER_STATUS_RUNNING,
    "worker.stopped": summaries_pb2.WORKER_STATUS_STOPPED,
    "worker.error": summaries_pb2.WORKER_STATUS_ERROR,
}


def heartbeat_state(last_heartbeat_at_ms: int, as_of_ms: int) -> summaries_pb2.HeartbeatState:
    """Freshness of the last heartbeat as of `as_of_ms` (pure)."""
    if last_heartbeat_at_ms == 0:
        return summaries_pb2.HEARTBEAT_STATE_MISSING
    if as_of_ms - last_heartbeat_at_ms > HEARTBEAT_STALE_AFTER_MS:
        return summaries_pb2.HEARTBEAT_STATE_STALE
    return summaries_pb2.HEARTBEAT_STATE_FRESH


def apply_worker_event(doc: CodexWorkerSummary, event: RuntimeEvent) -> CodexWorkerSummary:
    """The summary after folding `event` into `doc` (`doc` is left unchanged)."""
    out = CodexWorkerSummary()
    out.CopyFrom(doc)
    if out.event_count == 0:
        out.status = summaries_pb2.WORKER_STATUS_REGISTERED
    out.worker_id = event.stream_id.partition(":")[2]
    fold_envelope(out, event, STATUS_BY_TYPE)
    if event.type == "worker.heartbeat":
        out.heartbeat_count += 1
        out.last_heartbeat_at_ms = event.occurred_at_ms
    elif event.type == "worker.request.received":
        out.request_count += 1
    elif event.type == "worker.error":
        out.error_count += 1
        message = text_field(payload_of(event), *ERROR_FIELDS)
        out.last_error = truncate_utf8(message or "", MAX_ERROR_BYTES)
    out.heartbeat_state = heartbeat_state(out.last_heartbeat_at_ms, event.occurred_at_ms)
    return out
