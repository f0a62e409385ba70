"""Token buckets and limit specs (no I/O; the clock is passed in)."""

from __future__ import annotations

import pytest

from khala_control.domain.errors import ControlError
from khala_control.domain.rate_limit import (
    RateLimit,
    RateLimitSettings,
    TokenBuckets,
    parse_rate_limit,
    retry_after_s,
)
from khala_control.usecases.limits import MINT, SIGN_IN, RateLimiter


@pytest.mark.parametrize(
    ("spec", "capacity", "period_s"),
    [("30/m", 30, 60.0), ("5/10s", 5, 10.0), ("1000/h", 1000, 3600.0), (" 2 / s ", 2, 1.0)],
)
def test_parse(spec: str, capacity: int, period_s: float) -> None:
    assert parse_rate_limit(spec) == RateLimit(capacity, period_s)


@pytest.mark.parametrize("spec", ["off", "OFF", "none", "0"])
def test_off(spec: str) -> None:
    assert parse_rate_limit(spec) is None


@pytest.mark.parametrize("spec", ["", "30", "30/d", "0/m", "x/m", "5/0s", "-1/m"])
def test_invalid(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_rate_limit(spec)


def test_burst_then_refill() -> None:
    buckets = TokenBuckets(RateLimit(3, 3.0))  # 1 per second, bursts of 3
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(1.0)
    assert buckets.take("a", 100.5) == pytest.approx(0.5)
    assert buckets.take("a", 101.0) == 0.0  # one token refilled
    assert buckets.take("b", 101.0) == 0.0  # keys are independent
    assert buckets.take("a", 1000.0) == 0.0  # refills up to capacity only
    assert [buckets.take("a", 1000.0) for _ in range(3)][-1] > 0


def test_least_recently_used_keys_are_forgotten() -> None:
    buckets = TokenBuckets(RateLimit(1, 60.0), max_keys=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    buckets.take("a", 0.0)  # a refused, but now most recently used
    buckets.take("c", 0.0)
    assert len(buckets) == 2
    assert buckets.take("a", 0.0) > 0  # still remembered
    assert buckets.take("b", 0.0) == 0.0  # forgotten: a fresh bucket


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(w) for w in (0.01, 1.0, 1.2, 59.9)] == [1, 1, 2, 60]


def test_limiter_raises_rate_limited_with_retry_after() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimitSettings(mint=RateLimit(1, 10.0)), clock=lambda: now[0])
    limiter.check(MINT, "usr_1")
    limiter.check(SIGN_IN, "1.2.3.4")  # not limited at all
    with pytest.raises(ControlError) as caught:
        limiter.check(MINT, "usr_1")
    assert caught.value.code == "rate_limited"
    assert caught.value.extra == {"retry_after_s": 10}
    now[0] = 10.0
    limiter.check(MINT, "usr_1")
