from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_CREATED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_PAUSED: _ClassVar[RunStatus]
    RUN_STATUS_SUCCEEDED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_CANCELED: _ClassVar[RunStatus]

class WorkerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATUS_UNSPECIFIED: _ClassVar[WorkerStatus]
    WORKER_STATUS_REGISTERED: _ClassVar[WorkerStatus]
    WORKER_STATUS_RUNNING: _ClassVar[WorkerStatus]
    WORKER_STATUS_STOPPED: _ClassVar[WorkerStatus]
    WORKER_STATUS_ERROR: _ClassVar[WorkerStatus]

class HeartbeatState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEARTBEAT_STATE_UNSPECIFIED: _ClassVar[HeartbeatState]
    HEARTBEAT_STATE_FRESH: _ClassVar[HeartbeatState]
    HEARTBEAT_STATE_STALE: _ClassVar[HeartbeatState]
    HEARTBEAT_STATE_MISSING: _ClassVar[HeartbeatState]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_CREATED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_PAUSED: RunStatus
RUN_STATUS_SUCCEEDED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_CANCELED: RunStatus
WORKER_STATUS_UNSPECIFIED: WorkerStatus
WORKER_STATUS_REGISTERED: WorkerStatus
WORKER_STATUS_RUNNING: WorkerStatus
WORKER_STATUS_STOPPED: WorkerStatus
WORKER_STATUS_ERROR: WorkerStatus
HEARTBEAT_STATE_UNSPECIFIED: HeartbeatState
HEARTBEAT_STATE_FRESH: HeartbeatState
HEARTBEAT_STATE_STALE: HeartbeatState
HEARTBEAT_STATE_MISSING: HeartbeatState

class RunSummary(_message.Message):
    __slots__ = ("run_id", "org_id", "title", "status", "last_seq", "event_count", "output_count", "last_event_type", "created_at_ms", "updated_at_ms", "last_output", "end_reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    org_id: str
    title: str
    status: RunStatus
    last_seq: int
    event_count: int
    output_count: int
    last_event_type: str
    created_at_ms: int
    updated_at_ms: int
    last_output: str
    end_reason: str
    def __init__(self, run_id: _Optional[str] = ..., org_id: _Optional[str] = ..., title: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., last_seq: _Optional[int] = ..., event_count: _Optional[int] = ..., output_count: _Optional[int] = ..., last_event_type: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., last_output: _Optional[str] = ..., end_reason: _Optional[str] = ...) -> None: ...

class CodexWorkerSummary(_message.Message):
    __slots__ = ("worker_id", "org_id", "status", "last_seq", "event_count", "heartbeat_count", "error_count", "request_count", "last_event_type", "last_heartbeat_at_ms", "created_at_ms", "updated_at_ms", "heartbeat_state", "last_error")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    org_id: str
    status: WorkerStatus
    last_seq: int
    event_count: int
    heartbeat_count: int
    error_count: int
    request_count: int
    last_event_type: str
    last_heartbeat_at_ms: int
    created_at_ms: int
    updated_at_ms: int
    heartbeat_state: HeartbeatState
    last_error: str
    def __init__(self, worker_id: _Optional[str] = ..., org_id: _Optional[str] = ..., status: _Optional[_Union[WorkerStatus, str]] = ..., last_seq: _Optional[int] = ..., event_count: _Optional[int] = ..., heartbeat_count: _Optional[int] = ..., error_count: _Optional[int] = ..., request_count: _Optional[int] = ..., last_event_type: _Optional[str] = ..., last_heartbeat_at_ms: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., heartbeat_state: _Optional[_Union[HeartbeatState, str]] = ..., last_error: _Optional[str] = ...) -> None: ...
