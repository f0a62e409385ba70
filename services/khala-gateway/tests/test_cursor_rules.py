"""Unit tests: where a subscription starts, and the exact stale_cursor reasons."""

import pytest

from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Cursor, Stale, StartPlan, TopicHead, plan_start

HEAD = TopicHead(epoch="e2", head_seq=100, oldest_seq=41)


def plan(
    epoch: str,
    after: int,
    *,
    is_doc: bool = False,
    snapshot_if_stale: bool = False,
    head: TopicHead = HEAD,
) -> StartPlan | Stale:
    return plan_start(
        Cursor(epoch, after), head, is_doc=is_doc, snapshot_if_stale=snapshot_if_stale
    )


def test_fresh_event_topic_starts_at_oldest_retained() -> None:
    assert plan("", 0) == StartPlan(snapshot=False, after_seq=40)


def test_fresh_doc_topic_snapshots_as_of_head() -> None:
    assert plan("", 0, is_doc=True) == StartPlan(snapshot=True, after_seq=100)


def test_fresh_is_never_stale_even_with_an_old_epoch() -> None:
    assert plan("e1", 0) == StartPlan(snapshot=False, after_seq=40)


def test_empty_topic_fresh_and_missing_row_defaults() -> None:
    empty = TopicHead()
    assert empty.epoch == "1"
    assert plan("", 0, head=empty) == StartPlan(snapshot=False, after_seq=0)
    assert plan("", 0, is_doc=True, head=empty) == StartPlan(snapshot=True, after_seq=0)


def test_resume_inside_the_window_replays_after_the_cursor() -> None:
    assert plan("e2", 70) == StartPlan(snapshot=False, after_seq=70)
    assert plan("", 70) == StartPlan(snapshot=False, after_seq=70)  # empty epoch = current
    assert plan("e2", 100) == StartPlan(snapshot=False, after_seq=100)  # caught up
    assert plan("e2", 40) == StartPlan(snapshot=False, after_seq=40)  # oldest - 1 is fine


@pytest.mark.parametrize(
    ("epoch", "after", "reason"),
    [
        ("e1", 50, codes.EPOCH_CHANGED),
        ("e1", 500, codes.EPOCH_CHANGED),  # epoch is judged before the head
        ("e2", 101, codes.CURSOR_AHEAD),
        ("", 101, codes.CURSOR_AHEAD),
        ("e2", 39, codes.RETENTION),
        ("e2", 1, codes.RETENTION),
    ],
)
def test_stale_reasons(epoch: str, after: int, reason: str) -> None:
    result = plan(epoch, after)
    assert isinstance(result, Stale)
    assert result.reason == reason
    assert result.message


def test_retention_on_a_doc_topic_with_snapshot_if_stale_snapshots() -> None:
    assert plan("e2", 10, is_doc=True, snapshot_if_stale=True) == StartPlan(True, 100)
    assert plan("e2", 10, is_doc=True) == Stale(codes.RETENTION)
    # snapshot_if_stale does not apply to event topics, nor to other reasons
    assert plan("e2", 10, snapshot_if_stale=True) == Stale(codes.RETENTION)
    assert plan("e1", 50, is_doc=True, snapshot_if_stale=True) == Stale(codes.EPOCH_CHANGED)
    assert plan("e2", 101, is_doc=True, snapshot_if_stale=True) == Stale(codes.CURSOR_AHEAD)


def test_topic_with_nothing_trimmed_accepts_any_cursor_up_to_head() -> None:
    head = TopicHead(epoch="1", head_seq=5, oldest_seq=0)
    assert plan("1", 3, head=head) == StartPlan(False, 3)
    assert plan("1", 6, head=head) == Stale(codes.CURSOR_AHEAD)


def test_empty_epoch_with_a_position_is_judged_against_the_current_epoch() -> None:
    """The documented trade-off (protocol.md §5): after a rebuild, an epoch-less cursor
    resumes inside the new epoch if its seq exists there; the stored epoch is refused."""
    rebuilt = TopicHead(epoch="e2", head_seq=100, oldest_seq=1)
    assert plan("", 40, head=rebuilt) == StartPlan(False, 40)
    assert plan("e1", 40, head=rebuilt) == Stale(codes.EPOCH_CHANGED)
    small = TopicHead(epoch="e2", head_seq=10, oldest_seq=1)
    assert plan("", 40, head=small) == Stale(codes.CURSOR_AHEAD)
