"""Validation of command requests: JSON bodies and query parameters become
checked domain inputs, or a `ValidationError` naming the offending field (422).

Rules: unknown fields are refused; `payload` must be a JSON object (absent
means `{}`) representable as canonical JSON; `idempotency_key` is optional,
1-255 characters without control characters, unique within a request; an
event whose frame could not fit in one gateway message is refused (413
`frame_too_large`, see frame_size.py) before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from khala_common.topics import SEGMENT_RULE
from khala_runtime.domain.canonical import canonical_json
from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.frame_size import frame_fits
from khala_runtime.domain.ids import is_valid_segment
from khala_runtime.domain.model import CreateRun, CreateWorker
from khala_runtime.domain.run_state import is_run_event_type
from khala_runtime.domain.worker_state import is_ingest_event_type
from openagents.runtime.v1.events_pb2 import EventInput

MAX_EVENTS_PER_APPEND = 500
MAX_KEY_CHARS = 255
MAX_TITLE_CHARS = 256
MAX_SEQ = 2**63 - 1
_STRING_FIELDS: dict[str, tuple[str, ...]] = {
    "run.output": ("text",),
    "run.failed": ("reason",),
    "run.canceled": ("reason",),
    "worker.error": ("error",),
}
# Keys: no control characters (C0, DEL, C1) and no lone surrogates (not UTF-8).
_BAD_KEY_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Text columns: no NUL and no lone surrogates.
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_SEGMENT_RULE = f"must match {SEGMENT_RULE}"
KnownType = Callable[[str], bool]


def parse_create_run(body: Mapping[str, object], new_run_id: Callable[[], str]) -> CreateRun:
    """A checked create-run request; `run_id` defaults to `new_run_id()`."""
    _reject_unknown(body, ("org_id", "run_id", "title"), "")
    org_id = body.get("org_id")
    if not is_valid_segment(org_id):
        raise ValidationError("org_id", "required; must match [A-Za-z0-9_-]{1,64}")
    run_id = body.get("run_id")
    if run_id is None:
        run_id = new_run_id()
    elif not is_valid_segment(run_id):
        raise ValidationError("run_id", "must match [A-Za-z0-9_-]{1,64}")
    title = body.get("title")
    if title is None:
        title = ""
    elif not isinstance(title, str) or len(title) > MAX_TITLE_CHARS or not _is_text(title):
        raise ValidationError(
            "title", f"must be a string of at most {MAX_TITLE_CHARS} characters without NUL"
        )
    assert isinstance(org_id, str) and isinstance(run_id, str)
    return CreateRun(org_id=org_id, run_id=run_id, title=title)


def parse_create_worker(body: Mapping[str, object]) -> CreateWorker:
    """A checked worker create-or-reattach request."""
    _reject_unknown(body, ("org_id", "worker_id"), "")
    org_id = body.get("org_id")
    if not is_valid_segment(org_id):
        raise ValidationError("org_id", f"required; {_SEGMENT_RULE}")
    worker_id = body.get("worker_id")
    if not is_valid_segment(worker_id):
        raise ValidationError("worker_id", f"required; {_SEGMENT_RULE}")
    assert isinstance(org_id, str) and isinstance(worker_id, str)
    return CreateWorker(org_id=org_id, worker_id=worker_id)


def parse_worker_append(body: Mapping[str, object]) -> tuple[list[EventInput], int | None]:
    """Checked worker events (the ingest taxonomy) and expected_seq of an append body."""
    return parse_append(body, known=is_ingest_event_type)


def parse_command(
    body: Mapping[str, object], event_type: str
) -> tuple[list[EventInput], int | None]:
    """A one-event command body `{payload?, idempotency_key?, expected_seq?}` as a batch
    of one `event_type` event (heartbeat, stop, resume)."""
    _reject_unknown(body, ("payload", "idempotency_key", "expected_seq"), "")
    payload = body.get("payload")
    event = check_event(
        event_type,
        canonical_payload({} if payload is None else payload, "payload"),
        body.get("idempotency_key"),
        "",
        known=lambda _: True,
    )
    return [event], check_expected_seq(body.get("expected_seq"))


def parse_append(
    body: Mapping[str, object], *, known: KnownType = is_run_event_type
) -> tuple[list[EventInput], int | None]:
    """Checked events (payloads canonicalized) and expected_seq of an append body."""
    _reject_unknown(body, ("events", "expected_seq"), "")
    raw_events = body.get("events")
    if not isinstance(raw_events, list):
        raise ValidationError("events", "required; must be a list")
    if len(raw_events) > MAX_EVENTS_PER_APPEND:
        raise ValidationError("events", f"at most {MAX_EVENTS_PER_APPEND} events per append")
    events: list[EventInput] = []
    for index, raw in enumerate(raw_events):
        field = f"events[{index}]"
        if not isinstance(raw, dict):
            raise ValidationError(field, "must be an object")
        _reject_unknown(raw, ("type", "payload", "idempotency_key"), f"{field}.")
        payload = raw.get("payload")
        payload = {} if payload is None else payload
        events.append(
            check_event(
                raw.get("type"),
                canonical_payload(payload, f"{field}.payload"),
                raw.get("idempotency_key"),
                field,
                known=known,
                payload_value=payload,
            )
        )
    check_batch(events)
    return events, check_expected_seq(body.get("expected_seq"))


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
    for name in _STRING_FIELDS.get(event_type, ()):
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


def check_expected_seq(value: object) -> int | None:
    """expected_seq: absent/null, or an integer 0..2^63-1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ValidationError("expected_seq", "must be a non-negative integer")
    return value


def int_param(raw: str | None, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter within [minimum, maximum]."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(name, "must be an integer") from None
    if not minimum <= value <= maximum:
        raise ValidationError(name, f"must be between {minimum} and {maximum}")
    return value


def _reject_unknown(body: Mapping[str, object], allowed: Sequence[str], prefix: str) -> None:
    for name in body:
        if name not in allowed:
            raise ValidationError(f"{prefix}{name}", "unknown field")


def _is_text(text: str) -> bool:
    """Storable as Postgres text: valid UTF-8 (no lone surrogates) and no NUL."""
    return _NOT_TEXT.search(text) is None


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """A list cursor `<created_at_ms>.<id>` (as returned in next_cursor)."""
    if raw is None or raw == "":
        return None
    millis, _, run_id = raw.partition(".")
    if not (millis.isascii() and millis.isdigit()) or not is_valid_segment(run_id) \
            or int(millis) > MAX_SEQ:
        raise ValidationError("cursor", "malformed; pass next_cursor back unchanged")
    return int(millis), run_id


def make_cursor(created_at_ms: int, subject_id: str) -> str:
    """The cursor that continues a run or worker list after this item."""
    return f"{created_at_ms}.{subject_id}"
