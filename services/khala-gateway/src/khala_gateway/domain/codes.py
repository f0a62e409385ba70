"""Error codes, stale-cursor reasons and close codes of openagents.sync.v1 (DESIGN §8)."""

from __future__ import annotations

from typing import Final

# Error.code values.
UNAUTHORIZED: Final = "unauthorized"
TOKEN_EXPIRED: Final = "token_expired"
FORBIDDEN_TOPIC: Final = "forbidden_topic"
INVALID_TOPIC: Final = "invalid_topic"
STALE_CURSOR: Final = "stale_cursor"
BAD_REQUEST: Final = "bad_request"
PAYLOAD_TOO_LARGE: Final = "payload_too_large"
TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
SLOW_CONSUMER: Final = "slow_consumer"
REAUTH_REQUIRED: Final = "reauth_required"
RATE_LIMITED: Final = "rate_limited"
UPGRADE_REQUIRED: Final = "upgrade_required"
INTERNAL: Final = "internal"

# Error.reason values of stale_cursor.
RETENTION: Final = "retention"
EPOCH_CHANGED: Final = "epoch_changed"
CURSOR_AHEAD: Final = "cursor_ahead"
REPLAY_BUDGET: Final = "replay_budget"

# WebSocket close codes.
CLOSE_NORMAL: Final = 1000
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_IDLE_TIMEOUT: Final = 4002  # no inbound message for the idle timeout (gateway choice)
CLOSE_FORBIDDEN: Final = 4003
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_REAUTH_REQUIRED: Final = 4009
CLOSE_UPGRADE_REQUIRED: Final = 4010
CLOSE_RATE_LIMITED: Final = 4029

# Subprotocols.
PROTO_SUBPROTOCOL: Final = "khala.v1+proto"
JSON_SUBPROTOCOL: Final = "khala.v1+json"
SUBPROTOCOLS: Final = (PROTO_SUBPROTOCOL, JSON_SUBPROTOCOL)
