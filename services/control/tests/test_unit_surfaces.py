"""Surface matrix and minimum versions (no I/O)."""

from __future__ import annotations

import pytest

from khala_common.topics import TopicClass
from khala_control.domain.errors import ControlError
from khala_control.domain.surfaces import DEFAULT_MATRIX_SPEC, SurfacePolicy, parse_matrix

ALL = frozenset(TopicClass)


def test_default_matrix_matches_design() -> None:
    policy = SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC)
    assert policy.readable("web") == {TopicClass.RUNS, TopicClass.WORKERS}
    assert policy.readable("desktop") == ALL
    assert policy.readable("ios") == ALL
    assert policy.readable("onyx") == {TopicClass.RUNS}


def test_unknown_surface_is_bad_request() -> None:
    policy = SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC)
    with pytest.raises(ControlError) as caught:
        policy.readable("tv")
    assert caught.value.code == "bad_request"
    assert "tv" in caught.value.message


def test_custom_matrix() -> None:
    matrix = parse_matrix(" web = runs ; cli=runs,run, ;empty=")
    assert matrix == {
        "web": {TopicClass.RUNS},
        "cli": {TopicClass.RUNS, TopicClass.RUN},
        "empty": frozenset(),
    }


@pytest.mark.parametrize(
    "spec", ["", "web", "web=runs;web=workers", "web=runs,logs", "Web=runs", "=runs"]
)
def test_invalid_matrix(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_matrix(spec)


def test_minimum_versions() -> None:
    policy = SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC, "ios=2.0.0;desktop=1.4")
    policy.check_client_version("ios", "2.0.0")
    policy.check_client_version("web", "0.0.1")  # no minimum
    with pytest.raises(ControlError) as caught:
        policy.check_client_version("ios", "1.9.0")
    assert caught.value.code == "upgrade_required"
    assert caught.value.extra == {"surface": "ios", "minimum_version": "2.0.0"}
    with pytest.raises(ControlError):
        policy.check_client_version("desktop", "1.3.99")


@pytest.mark.parametrize("spec", ["tv=1.0", "ios=soon", "ios"])
def test_invalid_minimums(spec: str) -> None:
    with pytest.raises(ValueError):
        SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC, spec)
