"""Runtime's HTTP contract, declared once: the pydantic models every route decodes
its body and query through, and from which handlers/openapi.py generates the
published document. A rule JSON Schema can state (pattern, length, bounds,
enum, required, unknown fields) lives here and only here; what it cannot
(an event's frame size: 413 `frame_too_large`; the state machines: 409) stays
in domain/ and is documented as a response.

A refused model becomes a `ValidationError` naming the field the way clients
see it (`events[3].idempotency_key`); an event whose `type` is no known type
is `unknown_event_type` (its own code, as on gRPC).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic import ValidationError as ModelError
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.heartbeat import HeartbeatState
from khala_runtime.domain.model import CreateRun, CreateWorker
from khala_runtime.domain.projection import ProjectionState
from khala_runtime.domain.requests import (
    CURSOR_PATTERN,
    KEY_PATTERN,
    MAX_EVENTS_PER_APPEND,
    MAX_KEY_CHARS,
    MAX_SEQ,
    MAX_TITLE_CHARS,
    STRING_PAYLOAD_FIELDS,
    TEXT_PATTERN,
    KnownType,
    canonical_payload,
    check_batch,
    check_event,
)
from khala_runtime.domain.run_state import RUN_EVENT_TYPES, RunStatus, is_run_event_type
from khala_runtime.domain.worker_state import (
    INGEST_EVENT_TYPES,
    WorkerStatus,
    is_ingest_event_type,
)
from openagents.runtime.v1.events_pb2 import EventInput

M = TypeVar("M", bound=BaseModel)
SEGMENT_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
MAX_PAGE = 1000

# Bodies are strict (no "3" for 3, no true for 1) and closed. Strings are Unicode
# text (a lone surrogate is refused) and patterns read as JSON Schema reads them
# (`$` is the end of the string, not also before a final newline).
_BODY = ConfigDict(strict=True, extra="forbid")
# Query values are strings by nature: numbers are parsed (lax); other parameters
# are ignored, as they always were.
_QUERY = ConfigDict(extra="ignore")

SegmentId = Annotated[str, Field(pattern=SEGMENT_PATTERN)]


def _integral(value: object) -> object:
    # JSON Schema's integer includes 5.0 (a number with no fraction); booleans stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Seq = Annotated[int, Field(ge=0, le=MAX_SEQ), BeforeValidator(_integral)]
# The character rule is published here and checked once, by check_event (the rule
# of every edge, gRPC's too), on the same character class.
IdempotencyKey = Annotated[
    str, Field(max_length=MAX_KEY_CHARS, json_schema_extra={"pattern": KEY_PATTERN})
]
Title = Annotated[str, Field(max_length=MAX_TITLE_CHARS, pattern=TEXT_PATTERN)]


# --- requests ---------------------------------------------------------------


class CreateRunBody(BaseModel):
    """POST /api/v1/runs."""

    model_config = _BODY
    org_id: SegmentId
    run_id: SegmentId | None = None
    title: Title | None = None


class CreateWorkerBody(BaseModel):
    """POST /api/v1/workers."""

    model_config = _BODY
    org_id: SegmentId
    worker_id: SegmentId


class CommandBody(BaseModel):
    """POST /api/v1/workers/{worker_id}/heartbeat|stop|resume (the body is optional)."""

    model_config = _BODY
    payload: dict[str, Any] | None = None
    idempotency_key: IdempotencyKey | None = None
    expected_seq: Seq | None = None


def _payload_type(fields: tuple[str, ...]) -> Any:
    """A payload object; the named fields, when present, are strings (or null)."""
    if not fields:
        return dict[str, Any]
    typed = TypedDict(  # type: ignore[misc]
        "Payload_" + "_".join(fields),
        {name: str | None for name in fields},
        total=False,
    )
    typed.__pydantic_config__ = ConfigDict(extra="allow", strict=True)  # type: ignore[attr-defined]
    return typed


class EventInputBody(BaseModel):
    """What every event input of a batch has; the variants below narrow `type` and
    `payload`."""

    model_config = _BODY
    type: str
    payload: dict[str, Any] | None = None
    idempotency_key: IdempotencyKey | None = None


def _event_union(name: str, types: frozenset[str]) -> Any:
    """One event input per group of types sharing a payload shape, told apart by
    `type` (a discriminated union: the type is checked first, and alone)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for event_type in sorted(types):
        groups.setdefault(STRING_PAYLOAD_FIELDS.get(event_type, ()), []).append(event_type)
    tag: Any = Literal
    variants = [
        create_model(
            f"{name}{'_' + '_'.join(fields) if fields else ''}",
            __base__=EventInputBody,
            type=(tag[tuple(group)], ...),
            payload=(_payload_type(fields) | None, None),
        )
        for fields, group in groups.items()
    ]
    if len(variants) == 1:
        return variants[0]
    return Annotated[functools.reduce(operator.or_, variants), Field(discriminator="type")]


RunEventInput = _event_union("RunEventInput", RUN_EVENT_TYPES)
WorkerEventInput = _event_union("WorkerEventInput", INGEST_EVENT_TYPES)


_DISTINCT_KEYS = "Idempotency keys are distinct within one request (422 otherwise)."


class RunAppendBody(BaseModel):
    """POST /api/v1/runs/{run_id}/events."""

    model_config = _BODY
    events: Annotated[
        list[RunEventInput],  # type: ignore[valid-type]
        Field(min_length=1, max_length=MAX_EVENTS_PER_APPEND, description=_DISTINCT_KEYS),
    ]
    expected_seq: Seq | None = None


class WorkerAppendBody(BaseModel):
    """POST /api/v1/workers/{worker_id}/events."""

    model_config = _BODY
    events: Annotated[
        list[WorkerEventInput],  # type: ignore[valid-type]
        Field(min_length=1, max_length=MAX_EVENTS_PER_APPEND, description=_DISTINCT_KEYS),
    ]
    expected_seq: Seq | None = None


class PageQuery(BaseModel):
    """`limit` of a list."""

    model_config = _QUERY
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100


class ListQuery(PageQuery):
    """GET /api/v1/runs and /api/v1/workers: an org's subjects, newest first."""

    org_id: SegmentId
    cursor: Annotated[str, Field(pattern=CURSOR_PATTERN)] | None = Field(
        None, description="next_cursor of the previous page, unchanged"
    )


class EventsQuery(PageQuery):
    """GET .../{id}/events: events after a seq."""

    after_seq: Seq = 0


AUDIT_CURSOR_PATTERN = r"^[0-9]{1,18}\.[0-9]{1,18}\.(run|worker):[A-Za-z0-9_-]{1,64}$"


class AuditQuery(PageQuery):
    """GET /api/v1/audit: an org's runtime actions, oldest first."""

    org_id: SegmentId
    after: Annotated[str, Field(pattern=AUDIT_CURSOR_PATTERN)] | None = Field(
        None, description="next_after of the previous page, unchanged"
    )


# --- responses --------------------------------------------------------------


class Projection(BaseModel):
    """A stream's projection status."""

    state: ProjectionState
    lag_events: Annotated[int, Field(ge=0)] | None


class Run(BaseModel):
    """A run snapshot with its projection status."""

    run_id: SegmentId
    org_id: SegmentId
    stream_id: str
    title: str
    status: RunStatus
    last_seq: Seq
    chain_hash: str
    created_at_ms: int
    updated_at_ms: int
    projection: Projection


class Worker(BaseModel):
    """A worker snapshot: head, heartbeat freshness and projection status."""

    worker_id: SegmentId
    org_id: SegmentId
    stream_id: str
    status: WorkerStatus
    last_seq: Seq
    chain_hash: str
    last_heartbeat_at_ms: int | None
    heartbeat_state: HeartbeatState
    heartbeat_age_ms: int | None
    heartbeat_stale_after_ms: int
    created_at_ms: int
    updated_at_ms: int
    projection: Projection


class Event(BaseModel):
    """One event of a stream's log."""

    event_id: Annotated[str, Field(json_schema_extra={"format": "uuid"})]
    stream_id: str
    org_id: SegmentId
    subject_id: SegmentId
    stream_seq: Seq
    type: str
    payload: dict[str, Any]
    idempotency_key: str | None
    occurred_at_ms: int
    chain_hash: str


class Receipt(BaseModel):
    """An append receipt."""

    stream_id: str
    first_seq: Seq
    last_seq: Seq
    event_ids: list[Annotated[str, Field(json_schema_extra={"format": "uuid"})]]
    chain_hash: str


class RunPage(BaseModel):
    """A page of runs."""

    runs: list[Run]
    next_cursor: str | None


class WorkerPage(BaseModel):
    """A page of workers."""

    workers: list[Worker]
    next_cursor: str | None


class RunEvents(BaseModel):
    """A page of a run's events."""

    run_id: SegmentId
    stream_id: str
    last_seq: Seq
    events: list[Event]
    next_after_seq: int | None


class WorkerEvents(BaseModel):
    """A page of a worker's events."""

    worker_id: SegmentId
    stream_id: str
    last_seq: Seq
    events: list[Event]
    next_after_seq: int | None


class Actor(BaseModel):
    """Who made a write: a user (with session, device, surface) or a service."""

    kind: Literal["user", "service"]
    id: str
    session_id: str
    device_id: str
    surface: str


class AuditEntry(BaseModel):
    """One write on an org's run or worker and its actor (null: written before
    actors were recorded)."""

    event_id: Annotated[str, Field(json_schema_extra={"format": "uuid"})]
    stream_id: str
    subject_kind: Literal["run", "worker"]
    subject_id: SegmentId
    stream_seq: Seq
    type: str
    occurred_at_ms: int
    actor: Actor | None


class AuditPage(BaseModel):
    """A page of an org's audit."""

    org_id: SegmentId
    entries: list[AuditEntry]
    next_after: str | None


class ErrorDetail(BaseModel):
    """khala_common's error envelope; the codes are in docs/runtime.md."""

    code: str
    message: str
    field: str | None = None
    current_seq: Seq | None = None
    keys: list[str] | None = None
    run_status: str | None = None
    worker_status: str | None = None
    frame_bytes: int | None = None
    retry_after_s: int | float | None = None


class Error(BaseModel):
    """A refusal."""

    error: ErrorDetail


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    problems: list[str] | None = None


# --- decoding ---------------------------------------------------------------


def decode(model: type[M], data: Mapping[str, object]) -> M:
    """`data` as a `model`, or the first refusal as a ValidationError naming its field."""
    try:
        return model.model_validate(data)
    except ModelError as exc:
        raise _refusal(exc.errors(include_url=False)[0]) from None


def _refusal(error: ErrorDetails) -> DomainError:
    # A discriminated union puts the event's type in the location; field names have no dot.
    path = [part for part in error["loc"] if not (isinstance(part, str) and "." in part)]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        event = error["input"]
        event_type = event.get("type") if isinstance(event, dict) else None
        type_field = f"{field}.type"
        if kind == "union_tag_invalid" and isinstance(event_type, str) and event_type:
            return DomainError(
                "unknown_event_type",
                f"{type_field}: unknown event type {event_type!r}",
                field=type_field,
            )
        return ValidationError(type_field, "required; must be a string")
    if kind == "extra_forbidden":
        return ValidationError(field, "unknown field")
    if kind == "missing":
        return ValidationError(field, "required")
    if kind in ("model_type", "dict_type", "typed_dict_type") and path:
        return ValidationError(field, "must be an object")
    return ValidationError(field or "body", error["msg"])


def _query(request_query: Mapping[str, str]) -> dict[str, str]:
    """Query values, an empty one meaning absent (as it always has)."""
    return {name: value for name, value in request_query.items() if value != ""}


def decode_query(model: type[M], request_query: Mapping[str, str]) -> M:
    """The query string as a `model`."""
    return decode(model, _query(request_query))


def parse_create_run(body: Mapping[str, object], new_run_id: Callable[[], str]) -> CreateRun:
    """A checked create-run request; `run_id` defaults to `new_run_id()`."""
    create = decode(CreateRunBody, body)
    return CreateRun(
        org_id=create.org_id, run_id=create.run_id or new_run_id(), title=create.title or ""
    )


def parse_create_worker(body: Mapping[str, object]) -> CreateWorker:
    """A checked worker create-or-reattach request."""
    create = decode(CreateWorkerBody, body)
    return CreateWorker(org_id=create.org_id, worker_id=create.worker_id)


def parse_append(
    body: Mapping[str, object], *, known: KnownType = is_run_event_type
) -> tuple[list[EventInput], int | None]:
    """Checked run events (payloads canonicalized) and expected_seq of an append body."""
    return _events(decode(RunAppendBody, body), known)


def parse_worker_append(body: Mapping[str, object]) -> tuple[list[EventInput], int | None]:
    """Checked worker events (the ingest taxonomy) and expected_seq of an append body."""
    return _events(decode(WorkerAppendBody, body), is_ingest_event_type)


def parse_command(
    body: Mapping[str, object], event_type: str
) -> tuple[list[EventInput], int | None]:
    """A one-event command body `{payload?, idempotency_key?, expected_seq?}` as a batch
    of one `event_type` event (heartbeat, stop, resume)."""
    command = decode(CommandBody, body)
    payload = command.payload or {}
    event = check_event(
        event_type,
        canonical_payload(payload, "payload"),
        command.idempotency_key,
        "",
        known=lambda _: True,
        payload_value=payload,
    )
    return [event], command.expected_seq


def _events(
    body: RunAppendBody | WorkerAppendBody, known: KnownType
) -> tuple[list[EventInput], int | None]:
    events: list[EventInput] = []
    for index, raw in enumerate(cast(list[EventInputBody], body.events)):
        field = f"events[{index}]"
        payload = raw.payload or {}
        events.append(
            check_event(
                raw.type,
                canonical_payload(payload, f"{field}.payload"),
                raw.idempotency_key,
                field,
                known=known,
                payload_value=payload,
            )
        )
    check_batch(events)
    return events, body.expected_seq
