"""Unit: exact refusals and edges of token scope checks and the surface matrix
(docs/mutation.md). Clients see each refusal's code and message, so the tests
pin them, not only that something was refused."""

from __future__ import annotations

import pytest

from khala_common.topics import TopicClass
from khala_control.domain.errors import ControlError
from khala_control.domain.scope import MAX_REQUESTED_TOPICS, parse_requested, scope_org_ids
from khala_control.domain.surfaces import (
    SurfacePolicy,
    parse_matrix,
    parse_minimum_versions,
)


def test_exactly_the_maximum_number_of_topics_is_accepted():
    names = [f"org.acme.run.r{i}" for i in range(MAX_REQUESTED_TOPICS)]
    assert len(parse_requested(names)) == MAX_REQUESTED_TOPICS
    with pytest.raises(ControlError) as caught:
        parse_requested([*names, "org.acme.run.extra"])
    assert (caught.value.code, caught.value.message) == (
        "bad_request",
        f"at most {MAX_REQUESTED_TOPICS} topics per token",
    )


def test_invalid_topic_refusal_names_the_topic():
    with pytest.raises(ControlError) as caught:
        parse_requested(["org.acme.runs", "org..x"])
    error = caught.value
    assert (error.code, error.message, error.extra) == (
        "invalid_topic",
        "'org..x' is not a valid Khala topic",
        {"topic": "org..x"},
    )


def test_scope_org_ids_of_two_segment_patterns():
    assert scope_org_ids(["org.acme", "org.beta.runs", "org.acme.run.r1", "x.y", "org"]) == (
        "acme",
        "beta",
    )


def _value_error(call, *args) -> str:
    with pytest.raises(ValueError) as caught:
        call(*args)
    return str(caught.value)


def test_matrix_skips_empty_entries_and_classes():
    assert parse_matrix("web=runs;;desktop=runs,,worker") == {
        "web": frozenset({TopicClass.RUNS}),
        "desktop": frozenset({TopicClass.RUNS, TopicClass.WORKER}),
    }


def test_matrix_refusals_name_the_problem():
    assert _value_error(parse_matrix, "web") == (
        "expected `surface=value` entries separated by `;`, got 'web'"
    )
    assert _value_error(parse_matrix, "web=runs=x") == (
        "unknown topic class 'runs=x' (known: runs, workers, run, worker)"
    )
    assert _value_error(parse_matrix, "web=runs;web=run") == "surface 'web' appears twice"
    assert _value_error(parse_matrix, " ; ") == "the matrix names no surface"


def test_minimum_versions_refusals_name_the_problem():
    surfaces = frozenset({"web"})
    assert _value_error(parse_minimum_versions, "ios=1.0.0", surfaces) == (
        "surface 'ios' is not in the surface matrix"
    )
    assert _value_error(parse_minimum_versions, "web=one", surfaces) == (
        "invalid version 'one' for surface 'web'"
    )


def test_unknown_surface_lists_the_known_ones():
    policy = SurfacePolicy.from_specs("web=runs;desktop=run")
    with pytest.raises(ControlError) as caught:
        policy.readable("tv")
    assert (caught.value.code, caught.value.message) == (
        "bad_request",
        "unknown surface 'tv' (known: desktop, web)",
    )


def test_upgrade_required_message():
    policy = SurfacePolicy.from_specs("web=runs", "web=1.4.0")
    with pytest.raises(ControlError) as caught:
        policy.check_client_version("web", "1.3.9")
    error = caught.value
    assert (error.code, error.message, error.extra) == (
        "upgrade_required",
        "web clients must run version 1.4.0 or newer",
        {"surface": "web", "minimum_version": "1.4.0"},
    )
