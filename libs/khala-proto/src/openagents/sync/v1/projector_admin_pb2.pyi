from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProjectionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROJECTION_STATE_UNSPECIFIED: _ClassVar[ProjectionState]
    PROJECTION_STATE_IN_SYNC: _ClassVar[ProjectionState]
    PROJECTION_STATE_LAGGING: _ClassVar[ProjectionState]
PROJECTION_STATE_UNSPECIFIED: ProjectionState
PROJECTION_STATE_IN_SYNC: ProjectionState
PROJECTION_STATE_LAGGING: ProjectionState

class StreamHead(_message.Message):
    __slots__ = ("stream_id", "head_seq", "head_occurred_at_ms")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    head_seq: int
    head_occurred_at_ms: int
    def __init__(self, stream_id: _Optional[str] = ..., head_seq: _Optional[int] = ..., head_occurred_at_ms: _Optional[int] = ...) -> None: ...

class GetProjectionStatusRequest(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamHead]
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamHead, _Mapping]]] = ...) -> None: ...

class ProjectionStatus(_message.Message):
    __slots__ = ("stream_id", "state", "checkpoint_seq", "lag_events", "lag_ms", "checkpoint_occurred_at_ms")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    state: ProjectionState
    checkpoint_seq: int
    lag_events: int
    lag_ms: int
    checkpoint_occurred_at_ms: int
    def __init__(self, stream_id: _Optional[str] = ..., state: _Optional[_Union[ProjectionState, str]] = ..., checkpoint_seq: _Optional[int] = ..., lag_events: _Optional[int] = ..., lag_ms: _Optional[int] = ..., checkpoint_occurred_at_ms: _Optional[int] = ...) -> None: ...

class GetProjectionStatusResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[ProjectionStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[ProjectionStatus, _Mapping]]] = ...) -> None: ...
