"""The per-(socket, topic) sequencing rule that keeps delivery gapless and duplicate-free.

Given the last seq handed to a socket for a topic, an incoming frame is either
the next one (send it), one already sent (drop it), or beyond the next one (a
gap: the missing frames must be read from Postgres first).
"""

from __future__ import annotations

from enum import Enum


class Decision(Enum):
    """What to do with a frame of the subscription's epoch."""

    SEND = "send"
    DROP = "drop"
    GAP = "gap"


def classify(seq: int, last_sent: int) -> Decision:
    """SEND if `seq` is next after `last_sent`, DROP if already sent, else GAP."""
    if seq <= last_sent:
        return Decision.DROP
    if seq == last_sent + 1:
        return Decision.SEND
    return Decision.GAP


def fill_range(last_sent: int, known_head: int, chunk: int, next_buffered: int | None) -> int:
    """The highest seq to read from Postgres in one step after `last_sent`.

    Reads at most `chunk` frames, never past the known head, and stops before
    the lowest frame already buffered from the broker (`next_buffered`).
    """
    upto = min(known_head, last_sent + chunk)
    if next_buffered is not None and next_buffered > last_sent:
        upto = min(upto, next_buffered - 1)
    return upto


def contiguous_from(last_sent: int, seqs: list[int]) -> int:
    """How many leading entries of sorted `seqs` continue `last_sent` without a hole."""
    count = 0
    expected = last_sent + 1
    for seq in seqs:
        if seq != expected:
            break
        count += 1
        expected += 1
    return count
