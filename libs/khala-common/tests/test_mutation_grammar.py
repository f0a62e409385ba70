"""Unit: byte-length edges of the topic grammar and prerelease ordering
(docs/mutation.md)."""

from __future__ import annotations

from khala_common.topics import MAX_TOPIC_BYTES, is_valid_pattern, is_valid_segment, is_valid_topic
from khala_common.versions import parse_version

# Four 63-byte segments and three dots: exactly MAX_TOPIC_BYTES.
LONGEST = ".".join(["a" * 63] * 4)


def test_topic_and_pattern_of_exactly_the_maximum_length():
    assert len(LONGEST) == MAX_TOPIC_BYTES
    assert is_valid_topic(LONGEST)
    assert is_valid_pattern(LONGEST)
    assert is_valid_pattern(LONGEST[:-2] + ".*")


def test_topic_and_pattern_one_byte_too_long():
    too_long = LONGEST + "a"  # last segment now 64 bytes: valid alone, too long in total
    assert len(too_long) == MAX_TOPIC_BYTES + 1
    assert not is_valid_topic(too_long)
    assert not is_valid_pattern(too_long)
    assert not is_valid_pattern("")


def test_is_valid_segment():
    assert is_valid_segment("run-1_A")
    assert not is_valid_segment("a.b")
    assert not is_valid_segment("")
    assert not is_valid_segment(7)
    assert not is_valid_segment(None)


def test_a_prerelease_is_not_below_itself():
    version = parse_version("1.0.0-rc.1")
    assert version is not None
    assert not version < version
    assert not version < parse_version("1.0-rc.1")  # type: ignore[operator]
