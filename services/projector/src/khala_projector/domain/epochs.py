"""Rebuild epochs: unique for all time, including across a backup restore.

A cursor is `(epoch, after_seq)`, so an epoch value must never name two
different histories of a topic. A rebuild's epoch therefore comes from the
clock and randomness, not from a database sequence (a restore rewinds
`rebuild_id`, so `rebuild_id + 1` could be minted again):

    epoch = str(ms since the Unix epoch << 20 | 20 random bits)

a 63-bit positive integer in decimal until the year 2248, time-ordered to the
millisecond; two epochs minted in the same millisecond collide with
probability 2^-20, and a restore cannot bring back the clock. Epochs are
compared for equality only, so older ones (`rebuild_id + 1`) stay valid.
A topic's first epoch is still "1" (the gateway reports "1" for a topic that
has no row yet, and clients learn the epoch from Subscribed).
"""

from __future__ import annotations

import secrets
import time

RANDOM_BITS = 20
_MAX_MS = (1 << (63 - RANDOM_BITS)) - 1


def epoch_from(now_ms: int, random_bits: int) -> str:
    """The epoch of a clock reading and RANDOM_BITS random bits (pure)."""
    if not 0 <= now_ms <= _MAX_MS:
        raise ValueError(f"now_ms {now_ms} is outside 0..{_MAX_MS}")
    if not 0 <= random_bits < 1 << RANDOM_BITS:
        raise ValueError("random_bits must fit in RANDOM_BITS bits")
    return str(now_ms << RANDOM_BITS | random_bits)


def new_epoch() -> str:
    """A fresh epoch from the wall clock and the OS's randomness."""
    return epoch_from(time.time_ns() // 1_000_000, secrets.randbits(RANDOM_BITS))
