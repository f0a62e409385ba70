"""Rate limits of the expensive or abusable actions: sign-in and refresh (per
client address) and sync-token mints (per user). A refusal is `rate_limited`
with `retry_after_s`; the HTTP edge turns it into 429 with `Retry-After`.
Refusals are counted, not audited, so a flood cannot grow the audit log."""

from __future__ import annotations

import time
from collections.abc import Callable

from khala_control.domain.errors import ControlError
from khala_control.domain.rate_limit import RateLimitSettings, TokenBuckets, retry_after_s
from khala_control.metrics import RATE_LIMITED

SIGN_IN = "sign_in"
REFRESH = "refresh"
MINT = "mint"


class RateLimiter:
    """In-process token buckets for each limited action."""

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBuckets] = {
            action: TokenBuckets(limit)
            for action, limit in (
                (SIGN_IN, settings.sign_in),
                (REFRESH, settings.refresh),
                (MINT, settings.mint),
            )
            if limit is not None
        }

    def check(self, action: str, key: str) -> None:
        """Spend one request of `key` for `action`, or raise `rate_limited`."""
        buckets = self._buckets.get(action)
        if buckets is None:
            return
        wait_s = buckets.take(key, self._clock())
        if wait_s > 0:
            RATE_LIMITED.labels(action=action).inc()
            seconds = retry_after_s(wait_s)
            raise ControlError(
                "rate_limited",
                f"too many {action.replace('_', '-')} requests "
                f"(limit {buckets.limit}); retry in {seconds} s",
                retry_after_s=seconds,
            )
