"""The rules of an event input, whichever edge it came through (HTTP bodies are
shaped by handlers/schemas.py, gRPC messages by their proto): checked domain
inputs, or a `ValidationError` naming the offending field (422).

Rules: the type is one the stream knows (`unknown_event_type` otherwise); a
`payload` is a JSON object (absent means `{}`) representable as canonical JSON,
whose STRING_PAYLOAD_FIELDS are strings; `idempotency_key` is optional, at most
255 characters without control characters, unique within a request; an event
whose frame could not fit in one gateway message is refused (413
`frame_too_large`, see frame_size.py) before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from khala_runtime.domain.canonical import canonical_json
from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.frame_size import frame_fits
from khala_runtime.domain.ids import is_valid_segment
from khala_runtime.domain.run_state import is_run_event_type
from openagents.runtime.v1.events_pb2 import EventInput

MAX_EVENTS_PER_APPEND = 500
MAX_KEY_CHARS = 255
MAX_TITLE_CHARS = 256
MAX_SEQ = 2**63 - 1
STRING_PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    "run.output": ("text",),
    "run.failed": ("reason",),
    "run.canceled": ("reason",),
    "worker.error": ("error",),
}
# Keys: no control characters (C0, DEL, C1) and no lone surrogates (not UTF-8).
# The patterns are published (JSON Schema) without the surrogates: a JSON Schema
# string is Unicode text, which a lone surrogate is not (JSON decoders still let
# one through, so the code refuses it).
_CONTROL_CHARS = r"\u0000-\u001f\u007f-\u009f"
KEY_PATTERN = f"^[^{_CONTROL_CHARS}]*$"
_BAD_KEY_CHAR = re.compile(f"[{_CONTROL_CHARS}\ud800-\udfff]")
# Text columns: no NUL (and no lone surrogates).
TEXT_PATTERN = r"^[^\u0000]*$"
KnownType = Callable[[str], bool]


def canonical_payload(value: object, field: str) -> bytes:
    """The canonical JSON bytes of a payload object."""
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")
    try:
        return canonical_json(value)
    except ValueError:
        raise ValidationError(
            field, "must be finite JSON (no NaN/Infinity) of valid Unicode text"
        ) from None


def payload_from_bytes(raw: bytes, field: str) -> bytes:
    """Canonical payload bytes from client-supplied JSON bytes (empty means {})."""
    if not raw:
        return b"{}"
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValidationError(field, "must be UTF-8 JSON") from None
    return canonical_payload(value, field)


def check_event(
    event_type: object,
    payload_json: bytes,
    key: object,
    field: str,
    *,
    known: KnownType = is_run_event_type,
    payload_value: Mapping[str, object] | None = None,
) -> EventInput:
    """One checked event input (type known, payload fields typed, key well-formed).
    `field` is the event's path (`events[3]`), empty for a one-event command body;
    `payload_value` is the decoded payload when the caller has it already."""
    prefix = f"{field}." if field else ""
    if not isinstance(event_type, str) or not event_type:
        raise ValidationError(f"{prefix}type", "required; must be a string")
    if not known(event_type):
        raise DomainError(
            "unknown_event_type",
            f"{prefix}type: unknown event type {event_type!r}",
            field=f"{prefix}type",
        )
    if key is None:
        key = ""
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or _BAD_KEY_CHAR.search(key):
        raise ValidationError(
            f"{prefix}idempotency_key",
            f"must be a string of at most {MAX_KEY_CHARS} characters without control characters",
        )
    for name in STRING_PAYLOAD_FIELDS.get(event_type, ()):
        if payload_value is None:
            payload_value = json.loads(payload_json)
        value = payload_value.get(name)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{prefix}payload.{name}", "must be a string")
    fits, frame_bytes = frame_fits(event_type, payload_json, key)
    if not fits:
        raise DomainError(
            "frame_too_large",
            f"{prefix}payload: the event's frame could reach {frame_bytes} bytes on "
            "khala.v1+json (payload in base64), over the gateway's max_frame_bytes",
            field=f"{prefix}payload",
            frame_bytes=frame_bytes,
        )
    return EventInput(type=event_type, payload_json=payload_json, idempotency_key=key)


def check_batch(events: Sequence[EventInput]) -> None:
    """A batch is 1..MAX_EVENTS_PER_APPEND events with distinct idempotency keys."""
    if not events:
        raise ValidationError("events", "must not be empty")
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise ValidationError("events", f"at most {MAX_EVENTS_PER_APPEND} events per append")
    seen: set[str] = set()
    for index, event in enumerate(events):
        if event.idempotency_key in seen:
            raise ValidationError(f"events[{index}].idempotency_key", "repeats an earlier key")
        if event.idempotency_key:
            seen.add(event.idempotency_key)


CURSOR_PATTERN = r"^[0-9]{1,19}\.[A-Za-z0-9_-]{1,64}$"


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """A list cursor `<created_at_ms>.<id>` (as returned in next_cursor)."""
    if raw is None or raw == "":
        return None
    millis, _, run_id = raw.partition(".")
    if (
        not (millis.isascii() and millis.isdigit() and len(millis) <= 19)
        or not is_valid_segment(run_id)
        or int(millis) > MAX_SEQ
    ):
        raise ValidationError("cursor", "malformed; pass next_cursor back unchanged")
    return int(millis), run_id


def make_cursor(created_at_ms: int, subject_id: str) -> str:
    """The cursor that continues a run or worker list after this item."""
    return f"{created_at_ms}.{subject_id}"
