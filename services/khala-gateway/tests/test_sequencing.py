"""Unit tests: the send / drop / gap decision and the fill range."""

from khala_gateway.domain.sequencing import Decision, classify, contiguous_from, fill_range


def test_classify() -> None:
    assert classify(11, 10) is Decision.SEND
    assert classify(10, 10) is Decision.DROP
    assert classify(3, 10) is Decision.DROP
    assert classify(12, 10) is Decision.GAP
    assert classify(1, 0) is Decision.SEND


def test_fill_range_is_bounded_by_head_chunk_and_buffer() -> None:
    assert fill_range(10, 100, 500, None) == 100
    assert fill_range(10, 100, 20, None) == 30
    assert fill_range(10, 100, 500, 15) == 14  # stop before what the broker already gave us
    assert fill_range(10, 100, 500, 11) == 10  # nothing to read: the next frame is buffered
    assert fill_range(10, 100, 500, 9) == 100  # a stale buffered frame does not limit


def test_contiguous_from() -> None:
    assert contiguous_from(10, [11, 12, 13]) == 3
    assert contiguous_from(10, [11, 13]) == 1
    assert contiguous_from(10, [12, 13]) == 0
    assert contiguous_from(10, []) == 0
