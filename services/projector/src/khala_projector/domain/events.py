"""What the projector accepts as a runtime event (pure validation).

An event that fails these checks can never be projected, whatever the retry:
the consumer rejects it until the broker dead-letters it (DESIGN §4.3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from khala_common.topics import is_valid_topic
from openagents.runtime.v1 import events_pb2
from openagents.runtime.v1.events_pb2 import RuntimeEvent, RuntimeEventBatch

BATCH_TYPE = RuntimeEventBatch.DESCRIPTOR.full_name


class InvalidEvent(ValueError):
    """A RuntimeEvent the projector cannot place in any stream."""


class StreamKind(StrEnum):
    """The two kinds of runtime stream; the value is the stream id prefix."""

    RUN = "run"
    WORKER = "worker"


_PROTO_KIND = {
    events_pb2.STREAM_KIND_RUN: StreamKind.RUN,
    events_pb2.STREAM_KIND_WORKER: StreamKind.WORKER,
}


@dataclass(frozen=True)
class StreamRef:
    """One runtime stream: `run:<run_id>` or `worker:<worker_id>` of an org."""

    stream_id: str
    kind: StreamKind
    org_id: str
    subject_id: str


def _is_segment(value: str) -> bool:
    return "." not in value and is_valid_topic(value)


def stream_of(event: RuntimeEvent) -> StreamRef:
    """The stream `event` belongs to; raises InvalidEvent when it is malformed."""
    prefix, sep, subject = event.stream_id.partition(":")
    try:
        kind = StreamKind(prefix)
    except ValueError:
        raise InvalidEvent(
            f"stream_id {event.stream_id!r} is not run:<id> or worker:<id>"
        ) from None
    if not sep or not subject:
        raise InvalidEvent(f"stream_id {event.stream_id!r} has no subject id")
    declared = _PROTO_KIND.get(event.stream_kind)
    if event.stream_kind != events_pb2.STREAM_KIND_UNSPECIFIED and declared != kind:
        raise InvalidEvent(f"stream_kind does not match stream_id {event.stream_id!r}")
    if event.subject_id and event.subject_id != subject:
        raise InvalidEvent(f"subject_id {event.subject_id!r} does not match {event.stream_id!r}")
    # Both ids become topic segments (org.<org>.run.<run_id>).
    if not (_is_segment(event.org_id) and _is_segment(subject)):
        raise InvalidEvent("org_id and subject id must be topic segments [A-Za-z0-9_-]{1,64}")
    if event.stream_seq < 1:
        raise InvalidEvent("stream_seq must be >= 1")
    if not event.event_id:
        raise InvalidEvent("event_id is empty")
    if not event.type:
        raise InvalidEvent("type is empty")
    return StreamRef(event.stream_id, kind, event.org_id, subject)


def stream_ref(stream_id: str, org_id: str) -> StreamRef:
    """The stream named `stream_id` in `org_id` (as stored in checkpoints); raises InvalidEvent."""
    prefix, _, subject = stream_id.partition(":")
    try:
        kind = StreamKind(prefix)
    except ValueError:
        raise InvalidEvent(f"stream_id {stream_id!r} is not run:<id> or worker:<id>") from None
    if not (_is_segment(org_id) and _is_segment(subject)):
        raise InvalidEvent(f"stream {stream_id!r} of org {org_id!r} has no valid topic segments")
    return StreamRef(stream_id, kind, org_id, subject)


def decode_event(body: bytes) -> tuple[RuntimeEvent, StreamRef]:
    """Parse a broker body; raises InvalidEvent for bytes that are not a valid event."""
    event = RuntimeEvent()
    try:
        event.ParseFromString(body)
    except Exception as exc:  # protobuf raises DecodeError and, for bad UTF-8, others
        raise InvalidEvent(f"body is not an openagents.runtime.v1.RuntimeEvent: {exc}") from None
    return event, stream_of(event)


def decode_events(body: bytes, type_name: str | None) -> list[tuple[RuntimeEvent, StreamRef]]:
    """The events of a broker body: a RuntimeEventBatch when `type_name` (the
    message's type header) names one, else one RuntimeEvent. Raises InvalidEvent
    if the body or any event in it is not valid (the message is rejected whole)."""
    if type_name != BATCH_TYPE:
        return [decode_event(body)]
    batch = RuntimeEventBatch()
    try:
        batch.ParseFromString(body)
    except Exception as exc:
        raise InvalidEvent(f"body is not an {BATCH_TYPE}: {exc}") from None
    if not batch.events:
        raise InvalidEvent(f"{BATCH_TYPE} carries no event")
    return [(event, stream_of(event)) for event in batch.events]


def payload_of(event: RuntimeEvent) -> dict[str, Any]:
    """The event's JSON payload object; anything that is not a JSON object reads as {}."""
    if not event.payload_json:
        return {}
    try:
        value = json.loads(event.payload_json)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def text_field(payload: dict[str, Any], *names: str) -> str | None:
    """The first present field of `names` as text (non-strings as canonical JSON)."""
    for name in names:
        if name in payload and payload[name] is not None:
            value = payload[name]
            if isinstance(value, str):
                return value
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return None


def truncate_utf8(text: str, limit_bytes: int) -> str:
    """`text` cut to at most `limit_bytes` of UTF-8 without splitting a character."""
    encoded = text.encode()
    if len(encoded) <= limit_bytes:
        return text
    return encoded[:limit_bytes].decode(errors="ignore")


class Summary(Protocol):
    """The envelope fields every summary document folds the same way."""

    org_id: str
    last_seq: int
    event_count: int
    last_event_type: str
    created_at_ms: int
    updated_at_ms: int
    status: Any


def fold_envelope(out: Summary, event: RuntimeEvent, status_by_type: dict[str, Any]) -> None:
    """Fold `event` into the fields every summary shares: org, position, counts,
    times, and the status its type sets (if any)."""
    if out.event_count == 0:
        out.created_at_ms = event.occurred_at_ms
    out.org_id = event.org_id
    out.last_seq = event.stream_seq
    out.event_count += 1
    out.last_event_type = event.type
    out.updated_at_ms = event.occurred_at_ms
    status = status_by_type.get(event.type)
    if status is not None:
        out.status = status
