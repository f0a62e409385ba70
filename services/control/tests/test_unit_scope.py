"""Sync token scope computation (no I/O)."""

from __future__ import annotations

import pytest

from khala_common.topics import TopicClass, scope_allows
from khala_control.domain.errors import ControlError
from khala_control.domain.roles import Role
from khala_control.domain.scope import (
    MAX_REQUESTED_TOPICS,
    compute_scope,
    default_patterns,
    scope_org_ids,
)

ALL = frozenset(TopicClass)
WEB = frozenset({TopicClass.RUNS, TopicClass.WORKERS})
MEMBERSHIPS = {"acme": Role.VIEWER, "beta": Role.OWNER}


def test_requested_topics_are_granted_deduplicated_in_order() -> None:
    scope = compute_scope(
        ["org.acme.run.r1", "org.beta.runs", "org.acme.run.r1"], MEMBERSHIPS, ALL, "desktop"
    )
    assert scope == ("org.acme.run.r1", "org.beta.runs")


def test_empty_request_means_everything_the_surface_reads() -> None:
    assert compute_scope([], MEMBERSHIPS, ALL, "desktop") == (
        "org.acme.runs",
        "org.acme.workers",
        "org.acme.run.*",
        "org.acme.worker.*",
        "org.beta.runs",
        "org.beta.workers",
        "org.beta.run.*",
        "org.beta.worker.*",
    )
    assert compute_scope([], MEMBERSHIPS, WEB, "web") == (
        "org.acme.runs",
        "org.acme.workers",
        "org.beta.runs",
        "org.beta.workers",
    )
    assert compute_scope([], {}, ALL, "desktop") == ()


def test_default_patterns_admit_the_topics_they_should() -> None:
    scope = default_patterns(["acme"], frozenset({TopicClass.RUNS, TopicClass.RUN}))
    assert scope_allows(scope, "org.acme.run.r-9")
    assert scope_allows(scope, "org.acme.runs")
    assert not scope_allows(scope, "org.acme.worker.w1")
    assert not scope_allows(scope, "org.other.runs")


def test_non_member_topic_is_forbidden_and_named() -> None:
    with pytest.raises(ControlError) as caught:
        compute_scope(["org.acme.runs", "org.zeta.runs"], MEMBERSHIPS, ALL, "desktop")
    assert caught.value.code == "forbidden_topic"
    assert caught.value.extra == {"topic": "org.zeta.runs"}
    assert "not a member" in caught.value.message


def test_class_the_surface_may_not_read_is_forbidden() -> None:
    with pytest.raises(ControlError) as caught:
        compute_scope(["org.acme.runs", "org.acme.run.r1"], MEMBERSHIPS, WEB, "web")
    assert caught.value.code == "forbidden_topic"
    assert caught.value.extra == {"topic": "org.acme.run.r1"}
    assert "web" in caught.value.message


@pytest.mark.parametrize(
    "bad",
    [
        "org.acme",
        "org.acme.logs",
        "org.acme.run",
        "org.acme.runs.x",
        "org.*.runs",
        "x.acme.runs",
        "",
    ],
)
def test_invalid_topic_is_named(bad: str) -> None:
    with pytest.raises(ControlError) as caught:
        compute_scope(["org.acme.runs", bad], MEMBERSHIPS, ALL, "desktop")
    assert caught.value.code == "invalid_topic"
    assert caught.value.extra == {"topic": bad}


def test_invalid_beats_forbidden_regardless_of_order() -> None:
    with pytest.raises(ControlError) as caught:
        compute_scope(["org.zeta.runs", "nonsense"], MEMBERSHIPS, ALL, "desktop")
    assert caught.value.code == "invalid_topic"


def test_too_many_topics() -> None:
    topics = [f"org.acme.run.r{i}" for i in range(MAX_REQUESTED_TOPICS + 1)]
    with pytest.raises(ControlError) as caught:
        compute_scope(topics, MEMBERSHIPS, ALL, "desktop")
    assert caught.value.code == "bad_request"


def test_scope_org_ids_name_each_org_once_in_order() -> None:
    scope = ["org.b.runs", "org.a.run.*", "org.b.worker.*", "not-a-topic", "org"]
    assert scope_org_ids(scope) == ("b", "a")
    assert scope_org_ids([]) == ()
