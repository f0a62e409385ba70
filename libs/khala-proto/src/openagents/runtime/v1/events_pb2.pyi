from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_RUN: _ClassVar[StreamKind]
    STREAM_KIND_WORKER: _ClassVar[StreamKind]
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_RUN: StreamKind
STREAM_KIND_WORKER: StreamKind

class RuntimeEvent(_message.Message):
    __slots__ = ("event_id", "stream_id", "org_id", "stream_kind", "subject_id", "stream_seq", "type", "payload_json", "idempotency_key", "occurred_at_ms", "chain_hash")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    stream_id: str
    org_id: str
    stream_kind: StreamKind
    subject_id: str
    stream_seq: int
    type: str
    payload_json: bytes
    idempotency_key: str
    occurred_at_ms: int
    chain_hash: str
    def __init__(self, event_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., org_id: _Optional[str] = ..., stream_kind: _Optional[_Union[StreamKind, str]] = ..., subject_id: _Optional[str] = ..., stream_seq: _Optional[int] = ..., type: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ..., occurred_at_ms: _Optional[int] = ..., chain_hash: _Optional[str] = ...) -> None: ...

class RuntimeEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RuntimeEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[RuntimeEvent, _Mapping]]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("stream_id", "first_seq", "last_seq", "event_ids", "chain_hash")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    first_seq: int
    last_seq: int
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    chain_hash: str
    def __init__(self, stream_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., event_ids: _Optional[_Iterable[str]] = ..., chain_hash: _Optional[str] = ...) -> None: ...

class EventInput(_message.Message):
    __slots__ = ("type", "payload_json", "idempotency_key")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    type: str
    payload_json: bytes
    idempotency_key: str
    def __init__(self, type: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ...) -> None: ...
