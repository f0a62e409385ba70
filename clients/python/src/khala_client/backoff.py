"""Reconnect delays: exponential backoff with full jitter (protocol §7).

`sleep = random(0, min(cap, base * 2^attempt))`; the attempt counter resets once
a connection has been healthy for `healthy_after_s`. A server-given
`retry_after_ms` is a floor: the client never reconnects sooner.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Full-jitter exponential backoff with a healthy-connection reset."""

    base_s: float = 0.5
    cap_s: float = 30.0
    healthy_after_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap_s, self.base_s * float(2**self.attempt))

    def next_delay(self, retry_after_s: float = 0.0) -> float:
        """The next jittered delay (never below `retry_after_s`); advances the attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt = min(self.attempt + 1, 32)
        return max(delay, retry_after_s)

    def connection_lasted(self, healthy_s: float) -> None:
        """Reset the attempt counter if the connection was healthy long enough."""
        if healthy_s >= self.healthy_after_s:
            self.attempt = 0
