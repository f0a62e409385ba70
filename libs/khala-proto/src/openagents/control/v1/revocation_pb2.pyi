from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RevocationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_KIND_UNSPECIFIED: _ClassVar[RevocationKind]
    REVOCATION_KIND_SESSION: _ClassVar[RevocationKind]
    REVOCATION_KIND_DEVICE: _ClassVar[RevocationKind]
    REVOCATION_KIND_USER: _ClassVar[RevocationKind]
REVOCATION_KIND_UNSPECIFIED: RevocationKind
REVOCATION_KIND_SESSION: RevocationKind
REVOCATION_KIND_DEVICE: RevocationKind
REVOCATION_KIND_USER: RevocationKind

class Revocation(_message.Message):
    __slots__ = ("kind", "session_ids", "user_id", "device_id", "revoked_at_ms", "reason")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: RevocationKind
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    user_id: str
    device_id: str
    revoked_at_ms: int
    reason: str
    def __init__(self, kind: _Optional[_Union[RevocationKind, str]] = ..., session_ids: _Optional[_Iterable[str]] = ..., user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., revoked_at_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
