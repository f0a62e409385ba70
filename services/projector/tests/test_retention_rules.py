"""Unit: retention and compaction rules per topic class (pure)."""

from __future__ import annotations

from khala_projector.domain.retention import (
    RetentionPolicy,
    TopicRange,
    age_cutoff_ms,
    doc_compaction_ceiling,
    event_delete_upto,
    needs_pass,
    oldest_after_delete,
)

POLICY = RetentionPolicy(event_max_frames=10, event_max_age_ms=60_000, doc_tail_frames=5)
NOW = 1_000_000


def test_empty_topics_need_nothing():
    assert not needs_pass(TopicRange(0, 0, False), POLICY, NOW)
    assert not needs_pass(TopicRange(0, 0, True), POLICY, NOW)


def test_event_topic_over_its_frame_limit():
    topic = TopicRange(head_seq=25, oldest_seq=1, is_doc=False, oldest_at_ms=NOW)
    assert needs_pass(topic, POLICY, NOW)
    assert event_delete_upto(topic, POLICY, aged_upto_seq=0) == 15
    assert oldest_after_delete(1, 15) == 16


def test_event_topic_within_limits_keeps_everything():
    topic = TopicRange(head_seq=10, oldest_seq=1, is_doc=False, oldest_at_ms=NOW - 1)
    assert not needs_pass(topic, POLICY, NOW)
    assert event_delete_upto(topic, POLICY, aged_upto_seq=0) == 0


def test_age_limit_deletes_old_frames_but_keeps_the_head():
    old = TopicRange(head_seq=4, oldest_seq=1, is_doc=False, oldest_at_ms=NOW - 120_000)
    assert needs_pass(old, POLICY, NOW)
    assert age_cutoff_ms(POLICY, NOW) == NOW - 60_000
    assert event_delete_upto(old, POLICY, aged_upto_seq=2) == 2
    assert event_delete_upto(old, POLICY, aged_upto_seq=4) == 3  # the head stays
    single = TopicRange(head_seq=4, oldest_seq=4, is_doc=False, oldest_at_ms=NOW - 120_000)
    assert not needs_pass(single, POLICY, NOW)


def test_the_stricter_limit_wins():
    topic = TopicRange(head_seq=30, oldest_seq=5, is_doc=False, oldest_at_ms=NOW - 120_000)
    assert event_delete_upto(topic, POLICY, aged_upto_seq=12) == 20  # count limit: 30-10
    assert event_delete_upto(topic, POLICY, aged_upto_seq=25) == 25  # age limit


def test_disabled_limits():
    off = RetentionPolicy(event_max_frames=0, event_max_age_ms=0, doc_tail_frames=0)
    topic = TopicRange(head_seq=10**6, oldest_seq=1, is_doc=False, oldest_at_ms=1)
    assert not needs_pass(topic, off, NOW)
    assert age_cutoff_ms(off, NOW) == 0
    assert event_delete_upto(topic, off, aged_upto_seq=0) == 0


def test_nothing_below_oldest_is_deleted_twice():
    topic = TopicRange(head_seq=30, oldest_seq=21, is_doc=False)
    assert event_delete_upto(topic, POLICY, aged_upto_seq=0) == 0
    assert oldest_after_delete(21, 0) == 21


def test_doc_topics_compact_below_their_tail():
    topic = TopicRange(head_seq=12, oldest_seq=1, is_doc=True)
    assert needs_pass(topic, POLICY, NOW)
    assert doc_compaction_ceiling(topic, POLICY) == 7
    small = TopicRange(head_seq=5, oldest_seq=1, is_doc=True)
    assert not needs_pass(small, POLICY, NOW)
    assert doc_compaction_ceiling(small, POLICY) == 0


def test_oldest_only_moves_forward():
    # A doc frame below oldest_seq may be superseded later and deleted then.
    assert oldest_after_delete(40, 12) == 40
    assert oldest_after_delete(40, 45) == 46
