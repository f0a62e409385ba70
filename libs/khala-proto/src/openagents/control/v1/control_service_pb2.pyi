from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_VIEWER: _ClassVar[Role]
    ROLE_MEMBER: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
    ROLE_OWNER: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_VIEWER: Role
ROLE_MEMBER: Role
ROLE_ADMIN: Role
ROLE_OWNER: Role

class Membership(_message.Message):
    __slots__ = ("org_id", "role")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    role: Role
    def __init__(self, org_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class IntrospectSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class IntrospectSessionResponse(_message.Message):
    __slots__ = ("active", "session_id", "user_id", "device_id", "memberships")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIPS_FIELD_NUMBER: _ClassVar[int]
    active: bool
    session_id: str
    user_id: str
    device_id: str
    memberships: _containers.RepeatedCompositeFieldContainer[Membership]
    def __init__(self, active: _Optional[bool] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., memberships: _Optional[_Iterable[_Union[Membership, _Mapping]]] = ...) -> None: ...

class GetJwksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJwksResponse(_message.Message):
    __slots__ = ("jwks_json",)
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    def __init__(self, jwks_json: _Optional[str] = ...) -> None: ...

class CheckTopicAccessRequest(_message.Message):
    __slots__ = ("user_id", "surface", "topic")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    surface: str
    topic: str
    def __init__(self, user_id: _Optional[str] = ..., surface: _Optional[str] = ..., topic: _Optional[str] = ...) -> None: ...

class CheckTopicAccessResponse(_message.Message):
    __slots__ = ("allowed", "reason")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ListRevokedSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokedSession(_message.Message):
    __slots__ = ("session_id", "revoked_at_ms", "refuse_until_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REFUSE_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    revoked_at_ms: int
    refuse_until_ms: int
    def __init__(self, session_id: _Optional[str] = ..., revoked_at_ms: _Optional[int] = ..., refuse_until_ms: _Optional[int] = ...) -> None: ...

class ListRevokedSessionsResponse(_message.Message):
    __slots__ = ("sessions", "as_of_ms")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_MS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[RevokedSession]
    as_of_ms: int
    def __init__(self, sessions: _Optional[_Iterable[_Union[RevokedSession, _Mapping]]] = ..., as_of_ms: _Optional[int] = ...) -> None: ...
