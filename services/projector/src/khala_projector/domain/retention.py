"""Retention and compaction rules per topic class (pure; DESIGN §8).

`oldest_seq` of a topic is the oldest seq of its contiguous retained tail:
every frame with oldest_seq <= seq <= head_seq of the current epoch exists.
Compaction only ever deletes frames below that tail, lowest seq first, and
moves `oldest_seq` to one past the highest seq it deleted, so a replay from
any after_seq >= oldest_seq - 1 is contiguous up to the head.

- Event topics keep the last `event_max_frames` frames and nothing older than
  `event_max_age_ms` (either limit may be 0 = off); the head frame always stays.
- Doc topics keep the latest frame of every key (so a snapshot still has every
  key) plus the last `doc_tail_frames` frames; older superseded frames go.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetentionPolicy:
    """Limits per topic class; 0 disables a limit."""

    event_max_frames: int
    event_max_age_ms: int
    doc_tail_frames: int


@dataclass(frozen=True)
class TopicRange:
    """A topic's current-epoch range and the commit time of its oldest retained frame."""

    head_seq: int
    oldest_seq: int
    is_doc: bool
    # published_at_ms of the frame at oldest_seq (0: unknown or missing).
    oldest_at_ms: int = 0


def age_cutoff_ms(policy: RetentionPolicy, now_ms: int) -> int:
    """Event frames committed before this time are past the age limit (0: no age limit)."""
    return now_ms - policy.event_max_age_ms if policy.event_max_age_ms > 0 else 0


def needs_pass(topic: TopicRange, policy: RetentionPolicy, now_ms: int) -> bool:
    """Whether the topic may hold frames that retention should delete."""
    if topic.head_seq == 0 or topic.oldest_seq == 0:
        return False
    retained = topic.head_seq - topic.oldest_seq + 1
    if topic.is_doc:
        return retained > policy.doc_tail_frames
    if policy.event_max_frames > 0 and retained > policy.event_max_frames:
        return True
    cutoff = age_cutoff_ms(policy, now_ms)
    return cutoff > 0 and 0 < topic.oldest_at_ms < cutoff and topic.oldest_seq < topic.head_seq


def event_delete_upto(topic: TopicRange, policy: RetentionPolicy, aged_upto_seq: int) -> int:
    """Highest seq of an event topic to delete (0: none).

    `aged_upto_seq` is the highest seq committed before the age cutoff (0: none).
    The head frame is always kept, so a topic never looks empty once written.
    """
    by_count = topic.head_seq - policy.event_max_frames if policy.event_max_frames > 0 else 0
    cut = min(max(by_count, aged_upto_seq), topic.head_seq - 1)
    return cut if cut >= topic.oldest_seq else 0


def doc_compaction_ceiling(topic: TopicRange, policy: RetentionPolicy) -> int:
    """Superseded doc frames with seq <= this are deleted (0: none)."""
    return max(0, topic.head_seq - policy.doc_tail_frames)


def oldest_after_delete(oldest_seq: int, deleted_upto: int) -> int:
    """`oldest_seq` after deleting frames up to `deleted_upto` (lowest first)."""
    return max(oldest_seq, deleted_upto + 1) if deleted_upto > 0 else oldest_seq
