from openagents.sync.v1 import frames_pb2 as _frames_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CloseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOSE_CODE_UNSPECIFIED: _ClassVar[CloseCode]
    CLOSE_CODE_NORMAL: _ClassVar[CloseCode]
    CLOSE_CODE_INTERNAL_ERROR: _ClassVar[CloseCode]
    CLOSE_CODE_IDLE_TIMEOUT: _ClassVar[CloseCode]
    CLOSE_CODE_SERVICE_RESTART: _ClassVar[CloseCode]
    CLOSE_CODE_MESSAGE_TOO_BIG: _ClassVar[CloseCode]
    CLOSE_CODE_UNAUTHORIZED: _ClassVar[CloseCode]
    CLOSE_CODE_FORBIDDEN: _ClassVar[CloseCode]
    CLOSE_CODE_SLOW_CONSUMER: _ClassVar[CloseCode]
    CLOSE_CODE_REAUTH_REQUIRED: _ClassVar[CloseCode]
    CLOSE_CODE_UPGRADE_REQUIRED: _ClassVar[CloseCode]
    CLOSE_CODE_RATE_LIMITED: _ClassVar[CloseCode]
CLOSE_CODE_UNSPECIFIED: CloseCode
CLOSE_CODE_NORMAL: CloseCode
CLOSE_CODE_INTERNAL_ERROR: CloseCode
CLOSE_CODE_IDLE_TIMEOUT: CloseCode
CLOSE_CODE_SERVICE_RESTART: CloseCode
CLOSE_CODE_MESSAGE_TOO_BIG: CloseCode
CLOSE_CODE_UNAUTHORIZED: CloseCode
CLOSE_CODE_FORBIDDEN: CloseCode
CLOSE_CODE_SLOW_CONSUMER: CloseCode
CLOSE_CODE_REAUTH_REQUIRED: CloseCode
CLOSE_CODE_UPGRADE_REQUIRED: CloseCode
CLOSE_CODE_RATE_LIMITED: CloseCode

class ClientMessage(_message.Message):
    __slots__ = ("hello", "subscribe", "unsubscribe", "refresh_auth", "ping")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    REFRESH_AUTH_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    refresh_auth: RefreshAuth
    ping: Ping
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., refresh_auth: _Optional[_Union[RefreshAuth, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("token", "client_name", "client_version")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    client_name: str
    client_version: str
    def __init__(self, token: _Optional[str] = ..., client_name: _Optional[str] = ..., client_version: _Optional[str] = ...) -> None: ...

class TopicCursor(_message.Message):
    __slots__ = ("topic", "epoch", "after_seq")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    topic: str
    epoch: str
    after_seq: int
    def __init__(self, topic: _Optional[str] = ..., epoch: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("request_id", "cursors", "snapshot_if_stale")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CURSORS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_IF_STALE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cursors: _containers.RepeatedCompositeFieldContainer[TopicCursor]
    snapshot_if_stale: bool
    def __init__(self, request_id: _Optional[str] = ..., cursors: _Optional[_Iterable[_Union[TopicCursor, _Mapping]]] = ..., snapshot_if_stale: _Optional[bool] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("request_id", "topics")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class RefreshAuth(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: str
    def __init__(self, nonce: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "subscribed", "frame", "frames", "snapshot_begin", "snapshot_end", "watermark", "heartbeat", "pong", "error", "reconnect")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_BEGIN_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    subscribed: Subscribed
    frame: _frames_pb2.KhalaFrame
    frames: _frames_pb2.FrameBatch
    snapshot_begin: SnapshotBegin
    snapshot_end: SnapshotEnd
    watermark: Watermark
    heartbeat: Heartbeat
    pong: Pong
    error: Error
    reconnect: Reconnect
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., frame: _Optional[_Union[_frames_pb2.KhalaFrame, _Mapping]] = ..., frames: _Optional[_Union[_frames_pb2.FrameBatch, _Mapping]] = ..., snapshot_begin: _Optional[_Union[SnapshotBegin, _Mapping]] = ..., snapshot_end: _Optional[_Union[SnapshotEnd, _Mapping]] = ..., watermark: _Optional[_Union[Watermark, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., reconnect: _Optional[_Union[Reconnect, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("connection_id", "server_version", "heartbeat_interval_ms", "max_frame_bytes", "token_expires_at_ms")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    server_version: str
    heartbeat_interval_ms: int
    max_frame_bytes: int
    token_expires_at_ms: int
    def __init__(self, connection_id: _Optional[str] = ..., server_version: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., token_expires_at_ms: _Optional[int] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("request_id", "topic", "epoch", "head_seq", "oldest_seq")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    topic: str
    epoch: str
    head_seq: int
    oldest_seq: int
    def __init__(self, request_id: _Optional[str] = ..., topic: _Optional[str] = ..., epoch: _Optional[str] = ..., head_seq: _Optional[int] = ..., oldest_seq: _Optional[int] = ...) -> None: ...

class SnapshotBegin(_message.Message):
    __slots__ = ("topic", "epoch", "as_of_seq")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQ_FIELD_NUMBER: _ClassVar[int]
    topic: str
    epoch: str
    as_of_seq: int
    def __init__(self, topic: _Optional[str] = ..., epoch: _Optional[str] = ..., as_of_seq: _Optional[int] = ...) -> None: ...

class SnapshotEnd(_message.Message):
    __slots__ = ("topic", "as_of_seq")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQ_FIELD_NUMBER: _ClassVar[int]
    topic: str
    as_of_seq: int
    def __init__(self, topic: _Optional[str] = ..., as_of_seq: _Optional[int] = ...) -> None: ...

class Watermark(_message.Message):
    __slots__ = ("topic", "seq", "live")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    seq: int
    live: bool
    def __init__(self, topic: _Optional[str] = ..., seq: _Optional[int] = ..., live: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("server_time_ms",)
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    server_time_ms: int
    def __init__(self, server_time_ms: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: str
    def __init__(self, nonce: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "topic", "request_id", "retry_after_ms", "oldest_seq", "head_seq", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    topic: str
    request_id: str
    retry_after_ms: int
    oldest_seq: int
    head_seq: int
    reason: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., topic: _Optional[str] = ..., request_id: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., oldest_seq: _Optional[int] = ..., head_seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Reconnect(_message.Message):
    __slots__ = ("reason", "retry_after_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    retry_after_ms: int
    def __init__(self, reason: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...
