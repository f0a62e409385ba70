from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_KIND_UNSPECIFIED: _ClassVar[FrameKind]
    FRAME_KIND_EVENT: _ClassVar[FrameKind]
    FRAME_KIND_DOC_UPSERT: _ClassVar[FrameKind]
    FRAME_KIND_DOC_DELETE: _ClassVar[FrameKind]
FRAME_KIND_UNSPECIFIED: FrameKind
FRAME_KIND_EVENT: FrameKind
FRAME_KIND_DOC_UPSERT: FrameKind
FRAME_KIND_DOC_DELETE: FrameKind

class KhalaFrame(_message.Message):
    __slots__ = ("topic", "seq", "kind", "key", "payload_bytes", "schema_version", "epoch", "published_at_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    seq: int
    kind: FrameKind
    key: str
    payload_bytes: bytes
    schema_version: str
    epoch: str
    published_at_ms: int
    def __init__(self, topic: _Optional[str] = ..., seq: _Optional[int] = ..., kind: _Optional[_Union[FrameKind, str]] = ..., key: _Optional[str] = ..., payload_bytes: _Optional[bytes] = ..., schema_version: _Optional[str] = ..., epoch: _Optional[str] = ..., published_at_ms: _Optional[int] = ...) -> None: ...

class FrameBatch(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[KhalaFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[KhalaFrame, _Mapping]]] = ...) -> None: ...

class FanoutBatch(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, frames: _Optional[_Iterable[bytes]] = ...) -> None: ...
