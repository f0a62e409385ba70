"""Sync token scope: requested topics ∩ the user's memberships ∩ the surface matrix.

Requested topics are concrete topics (`khala_common.topics.parse_topic`). An
empty request means everything the user may read on that surface, expressed as
patterns where `*` matches one segment. Checks run in a fixed order (every
topic must parse, then every topic must be allowed) and the first failing topic
in request order is named, so the same request always gets the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from khala_common.topics import Topic, TopicClass, parse_topic
from khala_control.domain.errors import ControlError
from khala_control.domain.roles import Role

MAX_REQUESTED_TOPICS = 256
_CLASS_ORDER = (TopicClass.RUNS, TopicClass.WORKERS, TopicClass.RUN, TopicClass.WORKER)


def parse_requested(raw: Sequence[str]) -> list[Topic]:
    """The requested topics, deduplicated in order; `invalid_topic` names the first bad one."""
    if len(raw) > MAX_REQUESTED_TOPICS:
        raise ControlError("bad_request", f"at most {MAX_REQUESTED_TOPICS} topics per token")
    topics: list[Topic] = []
    seen: set[str] = set()
    for name in raw:
        topic = parse_topic(name)
        if topic is None:
            raise ControlError("invalid_topic", f"{name!r} is not a valid Khala topic", topic=name)
        if topic.name not in seen:
            seen.add(topic.name)
            topics.append(topic)
    return topics


def access_problem(
    topic: Topic, memberships: Mapping[str, Role], readable: frozenset[TopicClass], surface: str
) -> str | None:
    """Why `topic` may not be read (None when it may)."""
    if topic.org_id not in memberships:
        return f"not a member of org {topic.org_id!r}"
    if topic.topic_class not in readable:
        return f"surface {surface!r} may not read {topic.topic_class.value!r} topics"
    return None


def default_patterns(org_ids: Iterable[str], readable: frozenset[TopicClass]) -> tuple[str, ...]:
    """Every topic pattern of the user's orgs that the surface may read."""
    patterns: list[str] = []
    for org_id in sorted(set(org_ids)):
        for topic_class in _CLASS_ORDER:
            if topic_class in readable:
                suffix = "" if topic_class.is_doc else ".*"
                patterns.append(f"org.{org_id}.{topic_class.value}{suffix}")
    return tuple(patterns)


def compute_scope(
    requested: Sequence[str],
    memberships: Mapping[str, Role],
    readable: frozenset[TopicClass],
    surface: str,
) -> tuple[str, ...]:
    """The scope to grant, or `invalid_topic` / `forbidden_topic` naming a topic."""
    topics = parse_requested(requested)
    if not topics:
        return default_patterns(memberships, readable)
    for topic in topics:
        problem = access_problem(topic, memberships, readable, surface)
        if problem is not None:
            raise ControlError(
                "forbidden_topic", f"topic {topic.name!r} is forbidden: {problem}", topic=topic.name
            )
    return tuple(topic.name for topic in topics)


def scope_org_ids(patterns: Iterable[str]) -> tuple[str, ...]:
    """The orgs a scope (or list of topics) covers, in first-seen order."""
    org_ids: dict[str, None] = {}
    for pattern in patterns:
        parts = pattern.split(".")
        if len(parts) >= 2 and parts[0] == "org":
            org_ids[parts[1]] = None
    return tuple(org_ids)
