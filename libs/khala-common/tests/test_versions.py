"""Client version parsing and ordering (no I/O)."""

from __future__ import annotations

import pytest

from khala_common.versions import Version, is_below, parse_version


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9", "1.10"),
        ("1", "1.0.1"),
        ("1.0.0-beta", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-beta"),
        ("1.0.0-alpha.2", "1.0.0-alpha.10"),
        ("1.0.0-2", "1.0.0-alpha"),
        ("0.9.9", "v1.0.0"),
    ],
)
def test_ordering(lower: str, higher: str) -> None:
    low, high = parse_version(lower), parse_version(higher)
    assert low is not None and high is not None
    assert low < high
    assert not high < low


def test_missing_parts_are_zero_and_build_metadata_ignored() -> None:
    a, b = parse_version("2"), parse_version("2.0.0+build.7")
    assert a is not None and b is not None
    assert not a < b and not b < a


@pytest.mark.parametrize("text", ["", "abc", "1..2", "1.2.", "1.0-", "1.0.0-a..b", "-1"])
def test_unparseable(text: str) -> None:
    assert parse_version(text) is None


def test_is_below() -> None:
    minimum = Version((2, 0, 0))
    assert is_below("1.9.9", minimum)
    assert is_below("2.0.0-rc.1", minimum)
    assert not is_below("2.0.0", minimum)
    assert not is_below("2.1", minimum)
    assert is_below("", minimum)  # unknown version cannot prove it is new enough
    assert is_below("latest", minimum)
    assert str(parse_version("v1.2.3-rc.1")) == "1.2.3-rc.1"
