"""Unit: checkpoint arithmetic (duplicates, next, gaps) and gap-fill checks."""

from __future__ import annotations

import pytest
from projector_testkit import make_event

from khala_projector.domain.sequencing import GapNotFilled, contiguous_range, plan
from khala_projector.domain.status import stream_status


def ev(seq, stream="run:r1"):
    return make_event("acme", stream, seq, "run.output")


def seqs(events):
    return [e.stream_seq for e in events]


@pytest.mark.parametrize(
    ("checkpoint", "delivered", "fresh", "duplicates", "gap"),
    [
        (0, [1], [1], 0, None),
        (0, [1, 2, 3], [1, 2, 3], 0, None),
        (3, [2, 3], [], 2, None),
        (3, [3, 4], [4], 1, None),
        (3, [4, 4, 5], [4, 5], 1, None),
        (1, [5], [5], 0, (1, 5)),
        (0, [1, 5], [1, 5], 0, (0, 5)),
        (2, [4, 3], [3, 4], 0, None),
        (0, [2], [2], 0, (0, 2)),
    ],
)
def test_plan(checkpoint, delivered, fresh, duplicates, gap):
    result = plan(checkpoint, [ev(s) for s in delivered])
    assert seqs(result.fresh) == fresh
    assert result.duplicates == duplicates
    assert result.gap == gap


def test_contiguous_range_accepts_the_exact_range():
    assert seqs(contiguous_range("run:r1", 1, 4, [ev(2), ev(3), ev(4)])) == [2, 3, 4]


@pytest.mark.parametrize(
    "fetched",
    [
        [ev(2), ev(3)],  # short
        [ev(2), ev(4), ev(3)],  # out of order
        [ev(2), ev(3), ev(4, "run:other")],  # wrong stream
        [ev(2), ev(3), ev(4), ev(5)],  # too many
    ],
)
def test_contiguous_range_refuses_anything_else(fetched):
    with pytest.raises(GapNotFilled):
        contiguous_range("run:r1", 1, 4, fetched)


@pytest.mark.parametrize(
    ("head", "checkpoint", "in_sync", "lag"),
    [(0, 0, True, 0), (5, 5, True, 0), (5, 3, False, 2), (5, 0, False, 5), (3, 5, True, 0)],
)
def test_stream_status(head, checkpoint, in_sync, lag):
    status = stream_status("run:r1", head, checkpoint)
    assert (status.in_sync, status.lag_events, status.checkpoint_seq) == (in_sync, lag, checkpoint)
