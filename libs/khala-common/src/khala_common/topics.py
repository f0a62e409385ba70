"""Topic grammar and scope patterns (DESIGN §5), shared by control (minting
scopes), the projector (naming topics) and the gateway (checking access).

A topic is `.`-separated segments of `[A-Za-z0-9_-]{1,64}`, at most 255 bytes;
it is also its AMQP routing key, so it can never contain `*` or `#`. A scope
pattern has the same shape where a segment may be `*`, matching exactly one
segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MAX_TOPIC_BYTES = 255
# One segment of a topic; also the grammar of every identifier that becomes one
# (org, run, worker and session ids), so an id is always a valid topic segment.
SEGMENT_RULE = "[A-Za-z0-9_-]{1,64}"
_SEGMENT = re.compile(SEGMENT_RULE)


def is_valid_segment(value: object) -> bool:
    """Whether `value` is a string that can stand as one topic segment."""
    return isinstance(value, str) and _SEGMENT.fullmatch(value) is not None


class TopicClass(StrEnum):
    """Doc topics carry summary documents by key; event topics are append-only."""

    RUNS = "runs"
    WORKERS = "workers"
    RUN = "run"
    WORKER = "worker"

    @property
    def is_doc(self) -> bool:
        return self in (TopicClass.RUNS, TopicClass.WORKERS)


@dataclass(frozen=True)
class Topic:
    """A parsed Khala topic: `org.<org>.runs|workers` or `org.<org>.run|worker.<id>`."""

    org_id: str
    topic_class: TopicClass
    subject_id: str = ""

    @property
    def name(self) -> str:
        base = f"org.{self.org_id}.{self.topic_class.value}"
        return f"{base}.{self.subject_id}" if self.subject_id else base


def is_valid_topic(name: str) -> bool:
    """Whether `name` satisfies the grammar (any segments, not only known classes)."""
    if not name or len(name.encode()) > MAX_TOPIC_BYTES:
        return False
    return all(_SEGMENT.fullmatch(segment) for segment in name.split("."))


def parse_topic(name: str) -> Topic | None:
    """The known topic `name` denotes, or None if it is invalid or unknown."""
    if not is_valid_topic(name):
        return None
    parts = name.split(".")
    if parts[0] != "org" or len(parts) not in (3, 4):
        return None
    try:
        topic_class = TopicClass(parts[2])
    except ValueError:
        return None
    if topic_class.is_doc != (len(parts) == 3):
        return None
    return Topic(parts[1], topic_class, parts[3] if len(parts) == 4 else "")


def runs_topic(org_id: str) -> str:
    return Topic(org_id, TopicClass.RUNS).name


def workers_topic(org_id: str) -> str:
    return Topic(org_id, TopicClass.WORKERS).name


def run_topic(org_id: str, run_id: str) -> str:
    return Topic(org_id, TopicClass.RUN, run_id).name


def worker_topic(org_id: str, worker_id: str) -> str:
    return Topic(org_id, TopicClass.WORKER, worker_id).name


def is_valid_pattern(pattern: str) -> bool:
    """Whether `pattern` is a topic whose segments may also be `*`."""
    if not pattern or len(pattern.encode()) > MAX_TOPIC_BYTES:
        return False
    return all(s == "*" or _SEGMENT.fullmatch(s) for s in pattern.split("."))


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether a scope pattern admits `topic` (`*` matches exactly one segment)."""
    p_parts = pattern.split(".")
    t_parts = topic.split(".")
    if len(p_parts) != len(t_parts):
        return False
    return all(p == "*" or p == t for p, t in zip(p_parts, t_parts, strict=True))


def scope_allows(scope: tuple[str, ...] | list[str], topic: str) -> bool:
    """Whether any pattern of `scope` admits `topic`."""
    return any(pattern_matches(pattern, topic) for pattern in scope)
