"""Khala client SDK: sign in through control, call runtime, and follow topics
over the WebSocket sync protocol (`openagents.sync.v1`).

`KhalaApi` is the HTTP side, `connect`/`SyncConnection` the raw socket, and
`KhalaClient` the resilient subscriber (reconnect, resume, token refresh,
idempotent apply, stale-cursor re-bootstrap, typed payloads).
"""

from khala_client.api import ApiError, KhalaApi, Session
from khala_client.backoff import Backoff
from khala_client.client import (
    AuthenticationFailed,
    ClientStopped,
    KhalaClient,
    OriginForbidden,
    SessionRevoked,
    UpgradeRequired,
)
from khala_client.cursors import (
    Cursor,
    CursorStore,
    FileCursorStore,
    MemoryCursorStore,
    SqliteCursorStore,
)
from khala_client.payloads import (
    SCHEMAS,
    UnknownSchema,
    decode_payload,
    event_payload,
    register_schema,
)
from khala_client.state import LocalState
from khala_client.tokens import ApiTokenSource, StaticTokenSource, SyncToken, TokenSource
from khala_client.tracker import TopicTracker, Verdict
from khala_client.updates import (
    Connected,
    Disconnected,
    FrameApplied,
    Live,
    Notice,
    SnapshotAborted,
    SnapshotCompleted,
    SnapshotStarted,
    Subscribed,
    TopicFailed,
    TopicReset,
    Update,
)
from khala_client.ws import JSON, PROTO, HelloRefused, SyncConnection, connect

__all__ = [
    "JSON",
    "PROTO",
    "SCHEMAS",
    "ApiError",
    "ApiTokenSource",
    "AuthenticationFailed",
    "Backoff",
    "ClientStopped",
    "Connected",
    "Cursor",
    "CursorStore",
    "Disconnected",
    "FileCursorStore",
    "FrameApplied",
    "HelloRefused",
    "KhalaApi",
    "KhalaClient",
    "Live",
    "LocalState",
    "MemoryCursorStore",
    "Notice",
    "OriginForbidden",
    "Session",
    "SessionRevoked",
    "SnapshotAborted",
    "SnapshotCompleted",
    "SnapshotStarted",
    "SqliteCursorStore",
    "StaticTokenSource",
    "Subscribed",
    "SyncConnection",
    "SyncToken",
    "TokenSource",
    "TopicFailed",
    "TopicReset",
    "TopicTracker",
    "UnknownSchema",
    "Update",
    "UpgradeRequired",
    "Verdict",
    "connect",
    "decode_payload",
    "event_payload",
    "register_schema",
]
