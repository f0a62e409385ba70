"""Checkpoint arithmetic: which delivered events are duplicates, which are
missing, and whether a fetched range closes a gap.

The checkpoint `last_seq` of a stream is the highest stream_seq folded in.
Since runtime's stream_seq is gapless from 1, an event is a duplicate when
seq <= last_seq, next when seq == last_seq + 1, and reveals a gap otherwise;
applying only contiguous runs keeps every document a fold of a log prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from openagents.runtime.v1.events_pb2 import RuntimeEvent


class GapNotFilled(RuntimeError):
    """Runtime did not return exactly the events needed to close a gap."""


@dataclass(frozen=True)
class Plan:
    """What to do with a stream's delivered events given its checkpoint."""

    fresh: tuple[RuntimeEvent, ...]
    duplicates: int
    # (after_seq, up_to_seq) to fetch from runtime, or None when `fresh` is contiguous.
    gap: tuple[int, int] | None


def plan(last_seq: int, delivered: Sequence[RuntimeEvent]) -> Plan:
    """Split delivered events (one stream) into duplicates, fresh events and a gap."""
    by_seq: dict[int, RuntimeEvent] = {}
    for event in delivered:
        if event.stream_seq > last_seq:
            by_seq.setdefault(event.stream_seq, event)
    fresh = tuple(by_seq[seq] for seq in sorted(by_seq))
    duplicates = len(delivered) - len(fresh)
    if not fresh:
        return Plan(fresh, duplicates, None)
    expected = range(last_seq + 1, last_seq + 1 + len(fresh))
    contiguous = all(e.stream_seq == s for e, s in zip(fresh, expected, strict=True))
    gap = None if contiguous else (last_seq, fresh[-1].stream_seq)
    return Plan(fresh, duplicates, gap)


def contiguous_range(
    stream_id: str, after_seq: int, up_to_seq: int, fetched: Sequence[RuntimeEvent]
) -> list[RuntimeEvent]:
    """`fetched` checked to be exactly seqs after_seq+1..up_to_seq of `stream_id`."""
    expected = up_to_seq - after_seq
    if len(fetched) != expected:
        raise GapNotFilled(
            f"{stream_id}: runtime returned {len(fetched)} events for "
            f"({after_seq}, {up_to_seq}], expected {expected}"
        )
    return contiguous_after(stream_id, after_seq, fetched)


def contiguous_after(
    stream_id: str, after_seq: int, fetched: Sequence[RuntimeEvent]
) -> list[RuntimeEvent]:
    """`fetched` checked to be seqs after_seq+1, after_seq+2, ... of `stream_id` (any count)."""
    for offset, event in enumerate(fetched, start=1):
        if event.stream_id != stream_id or event.stream_seq != after_seq + offset:
            raise GapNotFilled(
                f"{stream_id}: runtime returned {event.stream_id}#{event.stream_seq} "
                f"where #{after_seq + offset} was expected"
            )
    return list(fetched)
