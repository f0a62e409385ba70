"""Inbound limits: a token bucket for messages per second, client-version minimums,
field lengths, the send buffer's hard cap and the per-connection limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from khala_common.versions import is_below, parse_version
from khala_gateway.domain import codes


@dataclass(frozen=True)
class Limits:
    """Per-connection limits, from settings."""

    max_frame_bytes: int
    max_subscriptions: int
    send_queue_frames: int
    send_queue_bytes: int
    replay_chunk: int
    replay_budget: int = 0
    max_pending: int = 1_024


class TokenBucket:
    """`rate` tokens per second up to `burst`; each message takes one."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def allow(self, now: float) -> bool:
        """Take a token if one is available at `now`."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def below_minimum(client_version: str, surface: str, minimums: Mapping[str, str]) -> str | None:
    """The minimum version `client_version` fails for `surface`, or None if it is allowed.

    Versions compare the one way Khala compares them everywhere
    (`khala_common.versions`: semver order, a prerelease before its release). A
    surface without a configured minimum accepts any version; with one, an
    unparseable client version is below it.
    """
    minimum = minimums.get(surface)
    wanted = parse_version(minimum) if minimum else None
    if minimum is None or wanted is None:
        return None
    return minimum if is_below(client_version, wanted) else None


# Inbound field limits (docs/protocol.md §6): longer values are refused, never
# truncated, so the same input always gets the same answer.
MAX_PRE_AUTH_BYTES = 16 * 1024  # any message before a Hello was accepted
MAX_REQUEST_ID_CHARS = 128
MAX_NONCE_CHARS = 128
MAX_TOPIC_BYTES = 255  # the topic grammar's own limit
MAX_CLIENT_NAME_CHARS = 64
MAX_CLIENT_VERSION_CHARS = 64


def hard_cap(send_queue_bytes: int) -> int:
    """Bytes a connection's send buffer may hold before it is evicted at once: the bound
    plus an eighth (at least 64 KiB) of slack for replies and heartbeats queued at it."""
    return send_queue_bytes + max(64 * 1024, send_queue_bytes // 8)


def hello_problem(client_name: str, client_version: str) -> str | None:
    """Why a Hello's client fields are refused (`bad_request`), or None."""
    if len(client_name) > MAX_CLIENT_NAME_CHARS:
        return f"client_name is longer than {MAX_CLIENT_NAME_CHARS} characters"
    if len(client_version) > MAX_CLIENT_VERSION_CHARS:
        return f"client_version is longer than {MAX_CLIENT_VERSION_CHARS} characters"
    return None


def request_problem(
    request_id: str, topics: Sequence[str], max_topics: int
) -> tuple[str, str] | None:
    """Why a Subscribe or Unsubscribe is refused as a whole, as `(code, message)`, or None.

    Checked before any topic is looked at, so one oversized message costs one
    error, not one per topic.
    """
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return codes.BAD_REQUEST, f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters"
    if len(topics) > max_topics:
        return (
            codes.TOO_MANY_SUBSCRIPTIONS,
            f"{len(topics)} topics in one message; at most {max_topics} (max subscriptions)",
        )
    for topic in topics:
        if len(topic.encode()) > MAX_TOPIC_BYTES:
            return codes.INVALID_TOPIC, f"a topic is longer than {MAX_TOPIC_BYTES} bytes"
    return None


def nonce_problem(nonce: str) -> str | None:
    """Why a Ping nonce is refused (`bad_request`), or None."""
    if len(nonce) > MAX_NONCE_CHARS:
        return f"ping nonce is longer than {MAX_NONCE_CHARS} characters"
    return None
