"""Unit: the replay-budget and retention edges of cursor planning and the
buffered-frame edge of the fill range (docs/mutation.md)."""

from __future__ import annotations

import pytest

from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Cursor, Stale, StartPlan, TopicHead, fresh_start, plan_start
from khala_gateway.domain.sequencing import fill_range

HEAD = TopicHead(epoch="e1", head_seq=100, oldest_seq=1)


def test_fresh_event_topic_retained_from_seq_one_starts_at_zero():
    assert fresh_start(HEAD, is_doc=False) == StartPlan(snapshot=False, after_seq=0)
    assert fresh_start(TopicHead("e1", 7, 0), is_doc=False) == StartPlan(False, 7)


def budget_plan(after: int, budget: int, *, is_doc: bool = False, snap: bool = False):
    return plan_start(
        Cursor("e1", after), HEAD, is_doc=is_doc, snapshot_if_stale=snap, replay_budget=budget
    )


@pytest.mark.parametrize(
    ("after", "budget", "expected"),
    [
        (99, 1, StartPlan(snapshot=False, after_seq=99)),
        (98, 1, Stale(codes.REPLAY_BUDGET)),
        (90, 10, StartPlan(snapshot=False, after_seq=90)),  # exactly the budget
        (89, 10, Stale(codes.REPLAY_BUDGET)),
        (60, 50, StartPlan(snapshot=False, after_seq=60)),  # head - after, not head + after
        (5, 0, StartPlan(snapshot=False, after_seq=5)),  # 0 = unlimited
    ],
)
def test_replay_budget_edges(after: int, budget: int, expected: StartPlan | Stale):
    assert budget_plan(after, budget) == expected


def test_over_budget_snapshots_only_a_doc_topic_that_asks():
    assert budget_plan(10, 5, is_doc=True, snap=True) == StartPlan(snapshot=True, after_seq=100)
    assert budget_plan(10, 5, is_doc=True, snap=False) == Stale(codes.REPLAY_BUDGET)
    assert budget_plan(10, 5, is_doc=False, snap=True) == Stale(codes.REPLAY_BUDGET)
    assert Stale(codes.REPLAY_BUDGET).message == "the replay would exceed the replay budget"


def test_fill_range_ignores_a_buffered_frame_already_sent():
    assert fill_range(5, 10, 100, 5) == 10
    assert fill_range(5, 10, 100, 6) == 5
    assert fill_range(5, 10, 100, 8) == 7
