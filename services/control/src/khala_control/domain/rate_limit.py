"""Token-bucket rate limits, one bucket per key (a client address or a user id).

A limit `N/period` lets a key spend up to N requests at once and refills N per
period continuously (so `60/m` is one request per second on average, in bursts
of up to 60). Buckets live in process memory: with several replicas, each
replica allows the limit on its own. The clock is passed in, so this is pure.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d{1,9})\s*/\s*(\d{0,9})\s*(s|m|h)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_MAX_KEYS = 100_000


@dataclass(frozen=True)
class RateLimit:
    """`capacity` requests per `period_s`, as a bucket of that capacity."""

    capacity: int
    period_s: float

    @property
    def per_second(self) -> float:
        """Refill rate in requests per second."""
        return self.capacity / self.period_s

    def __str__(self) -> str:
        return f"{self.capacity}/{self.period_s:g}s"


@dataclass(frozen=True)
class RateLimitSettings:
    """One limit per limited action (None: unlimited)."""

    sign_in: RateLimit | None = None
    refresh: RateLimit | None = None
    mint: RateLimit | None = None


def parse_rate_limit(spec: str) -> RateLimit | None:
    """`"30/m"`, `"5/10s"`, `"1000/h"` → RateLimit; `"off"` → None (ValueError if invalid)."""
    if spec.strip().lower() in ("off", "none", "0"):
        return None
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"expected N/s, N/m, N/h, N/<seconds>s or off, got {spec!r}")
    capacity = int(match.group(1))
    period = float(match.group(2) or 1) * _UNIT_S[match.group(3)]
    if capacity < 1 or period <= 0:
        raise ValueError(f"a rate limit needs N >= 1 and a positive period, got {spec!r}")
    return RateLimit(capacity, period)


class TokenBuckets:
    """Buckets by key; the least recently used key is forgotten past `max_keys`."""

    def __init__(self, limit: RateLimit, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.limit = limit
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Spend one token of `key`'s bucket: 0.0 if allowed, else seconds until one is free."""
        tokens, updated = self._buckets.get(key, (float(self.limit.capacity), now))
        tokens = min(float(self.limit.capacity), tokens + (now - updated) * self.limit.per_second)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / self.limit.per_second

    def __len__(self) -> int:
        return len(self._buckets)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


def retry_after_s(wait_s: float) -> int:
    """The `Retry-After` value (whole seconds, at least 1) for a wait."""
    return max(1, math.ceil(wait_s))
