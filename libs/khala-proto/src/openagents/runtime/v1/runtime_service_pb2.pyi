from openagents.codex.v1 import summaries_pb2 as _summaries_pb2
from openagents.runtime.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadStreamRequest(_message.Message):
    __slots__ = ("stream_id", "after_seq", "up_to_seq")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    after_seq: int
    up_to_seq: int
    def __init__(self, stream_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., up_to_seq: _Optional[int] = ...) -> None: ...

class ReadStreamResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.RuntimeEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.RuntimeEvent, _Mapping]] = ...) -> None: ...

class AppendEventsRequest(_message.Message):
    __slots__ = ("run_id", "events", "expected_seq")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.EventInput]
    expected_seq: int
    def __init__(self, run_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_events_pb2.EventInput, _Mapping]]] = ..., expected_seq: _Optional[int] = ...) -> None: ...

class AppendEventsResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: _events_pb2.Receipt
    def __init__(self, receipt: _Optional[_Union[_events_pb2.Receipt, _Mapping]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "org_id", "title", "status", "last_seq", "created_at_ms", "updated_at_ms")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    org_id: str
    title: str
    status: _summaries_pb2.RunStatus
    last_seq: int
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, run_id: _Optional[str] = ..., org_id: _Optional[str] = ..., title: _Optional[str] = ..., status: _Optional[_Union[_summaries_pb2.RunStatus, str]] = ..., last_seq: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("worker_id", "org_id", "status", "last_seq", "last_heartbeat_at_ms", "created_at_ms", "updated_at_ms", "heartbeat_state", "heartbeat_age_ms", "heartbeat_stale_after_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_STATE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_STALE_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    org_id: str
    status: _summaries_pb2.WorkerStatus
    last_seq: int
    last_heartbeat_at_ms: int
    created_at_ms: int
    updated_at_ms: int
    heartbeat_state: _summaries_pb2.HeartbeatState
    heartbeat_age_ms: int
    heartbeat_stale_after_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., org_id: _Optional[str] = ..., status: _Optional[_Union[_summaries_pb2.WorkerStatus, str]] = ..., last_seq: _Optional[int] = ..., last_heartbeat_at_ms: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., heartbeat_state: _Optional[_Union[_summaries_pb2.HeartbeatState, str]] = ..., heartbeat_age_ms: _Optional[int] = ..., heartbeat_stale_after_ms: _Optional[int] = ...) -> None: ...

class GetWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class GetWorkerResponse(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: Worker
    def __init__(self, worker: _Optional[_Union[Worker, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("org_id",)
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    def __init__(self, org_id: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class VerifyStreamRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class VerifyStreamResponse(_message.Message):
    __slots__ = ("stream_id", "ok", "head_seq", "chain_hash", "events_checked", "broken_seq", "reason", "expected", "actual")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    EVENTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BROKEN_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    ok: bool
    head_seq: int
    chain_hash: str
    events_checked: int
    broken_seq: int
    reason: str
    expected: str
    actual: str
    def __init__(self, stream_id: _Optional[str] = ..., ok: _Optional[bool] = ..., head_seq: _Optional[int] = ..., chain_hash: _Optional[str] = ..., events_checked: _Optional[int] = ..., broken_seq: _Optional[int] = ..., reason: _Optional[str] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ("org_id", "kind", "page_size", "page_token")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    kind: _events_pb2.StreamKind
    page_size: int
    page_token: str
    def __init__(self, org_id: _Optional[str] = ..., kind: _Optional[_Union[_events_pb2.StreamKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("stream_id", "org_id", "head_seq", "head_occurred_at_ms")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    org_id: str
    head_seq: int
    head_occurred_at_ms: int
    def __init__(self, stream_id: _Optional[str] = ..., org_id: _Optional[str] = ..., head_seq: _Optional[int] = ..., head_occurred_at_ms: _Optional[int] = ...) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams", "next_page_token")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    next_page_token: str
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
