"""Khala client SDK: sign in through control, call runtime, and follow topics
over the WebSocket sync protocol (`openagents.sync.v1`)."""

from khala_client.api import ApiError, KhalaApi, Session
from khala_client.ws import JSON, PROTO, SyncConnection, connect

__all__ = ["JSON", "PROTO", "ApiError", "KhalaApi", "Session", "SyncConnection", "connect"]
