"""Unit tests: the inbound message bucket, client-version minimums and the replay budget."""

from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Cursor, Stale, StartPlan, TopicHead, plan_start
from khala_gateway.domain.limits import TokenBucket, below_minimum


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.4) is False
    assert bucket.allow(0.5) is True  # one token refilled after 0.5 s at 2/s
    assert bucket.allow(100.0) and bucket.tokens == 2.0  # never above the burst


def test_below_minimum() -> None:
    minimums = {"desktop": "1.2.0", "ios": "3"}
    assert below_minimum("1.1.9", "desktop", minimums) == "1.2.0"
    assert below_minimum("1.2", "desktop", minimums) is None  # 1.2 == 1.2.0
    assert below_minimum("1.10.0", "desktop", minimums) is None
    assert below_minimum("garbage", "desktop", minimums) == "1.2.0"
    assert below_minimum("2.9.9", "ios", minimums) == "3"
    assert below_minimum("0.0.1", "web", minimums) is None  # no minimum for web
    # the same semver order as control: a prerelease sorts before its release
    assert below_minimum("1.2.0-rc.1", "desktop", minimums) == "1.2.0"
    assert below_minimum("1.2.0+build.7", "desktop", minimums) is None
    assert below_minimum("1.2.0garbage", "desktop", minimums) == "1.2.0"


def test_replay_budget() -> None:
    head = TopicHead("1", 1000, 1)
    assert plan_start(
        Cursor("1", 800), head, is_doc=False, snapshot_if_stale=False, replay_budget=200
    ) == StartPlan(False, 800)
    assert plan_start(
        Cursor("1", 799), head, is_doc=False, snapshot_if_stale=False, replay_budget=200
    ) == Stale(codes.REPLAY_BUDGET)
    # a fresh subscription is never stale (retention bounds it)
    assert plan_start(
        Cursor("", 0), head, is_doc=False, snapshot_if_stale=False, replay_budget=200
    ) == StartPlan(False, 0)
    assert plan_start(
        Cursor("1", 10), head, is_doc=True, snapshot_if_stale=True, replay_budget=200
    ) == StartPlan(True, 1000)
    assert plan_start(
        Cursor("", 0), head, is_doc=True, snapshot_if_stale=False, replay_budget=200
    ) == StartPlan(True, 1000)
    assert plan_start(
        Cursor("1", 10), head, is_doc=False, snapshot_if_stale=False, replay_budget=0
    ) == StartPlan(False, 10)
