"""The apply rule (protocol §5) without I/O."""

from __future__ import annotations

from khala_client import Cursor, TopicTracker, Verdict


def test_fresh_event_topic_starts_at_oldest_and_discards_duplicates() -> None:
    tracker = TopicTracker("org.a.run.r")
    assert tracker.accept("1", 1) is Verdict.IGNORED  # before Subscribed
    tracker.subscribed("1", oldest_seq=5)
    assert tracker.accept("1", 5) is Verdict.APPLY
    assert tracker.accept("1", 6) is Verdict.APPLY
    assert tracker.accept("1", 6) is Verdict.DUPLICATE
    assert tracker.accept("1", 3) is Verdict.DUPLICATE
    assert tracker.cursor == Cursor("1", 6)


def test_gap_and_epoch_change_are_reported_without_moving_the_cursor() -> None:
    tracker = TopicTracker.from_cursor("org.a.run.r", Cursor("1", 10))
    tracker.subscribed("1", oldest_seq=1)
    assert tracker.accept("1", 12) is Verdict.GAP
    assert tracker.accept("2", 11) is Verdict.EPOCH_CHANGED
    assert tracker.cursor == Cursor("1", 10)
    assert tracker.accept("1", 11) is Verdict.APPLY


def test_snapshot_seqs_skip_and_the_cursor_moves_at_the_end() -> None:
    tracker = TopicTracker("org.a.runs")
    tracker.subscribed("e", oldest_seq=1)
    tracker.snapshot_begin("e", as_of_seq=9)
    assert tracker.accept("e", 3) is Verdict.APPLY
    assert tracker.accept("e", 7) is Verdict.APPLY
    assert tracker.accept("e", 7) is Verdict.DUPLICATE
    assert tracker.accept("e", 12) is Verdict.GAP  # past as_of inside the snapshot
    assert tracker.cursor == Cursor("e", 0)  # nothing stored mid-snapshot
    assert tracker.snapshot_end(9) == Cursor("e", 9)
    assert tracker.accept("e", 10) is Verdict.APPLY


def test_judge_does_not_advance_until_applied() -> None:
    tracker = TopicTracker.from_cursor("t", Cursor("1", 1))
    tracker.subscribed("1", 1)
    assert tracker.judge("1", 2) is Verdict.APPLY
    assert tracker.judge("1", 2) is Verdict.APPLY
    tracker.applied(2)
    assert tracker.judge("1", 2) is Verdict.DUPLICATE


def test_reset_makes_the_next_subscription_fresh() -> None:
    tracker = TopicTracker.from_cursor("t", Cursor("old", 40))
    tracker.reset()
    assert tracker.cursor == Cursor("", 0) and not tracker.active
    tracker.subscribed("new", oldest_seq=0)
    assert tracker.epoch == "new" and tracker.expected_next == 1


def test_resubscribe_deactivates_until_subscribed() -> None:
    tracker = TopicTracker.from_cursor("t", Cursor("1", 3))
    tracker.subscribed("1", 1)
    tracker.deactivate()
    assert tracker.accept("1", 4) is Verdict.IGNORED
    tracker.subscribed("1", 1)
    assert tracker.accept("1", 4) is Verdict.APPLY
