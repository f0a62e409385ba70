"""Helpers of the e2e tests: reading frames off a socket and checking order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from khala_client import SyncConnection
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2


@dataclass
class Received:
    """What one client saw of one topic, in arrival order."""

    frames: list[frames_pb2.KhalaFrame] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return [f.seq for f in self.frames]

    def events(self) -> list[events_pb2.RuntimeEvent]:
        return [events_pb2.RuntimeEvent.FromString(f.payload_bytes) for f in self.frames]


async def read_until(
    conn: SyncConnection, topic: str, until_seq: int, into: Received, timeout_s: float = 60.0
) -> Received:
    """Collect `topic`'s frames until seq `until_seq` arrives (or fail on timeout/close)."""

    async def run() -> None:
        async for message in conn.messages():
            kind = message.WhichOneof("body")
            if kind == "frame":
                if message.frame.topic == topic:
                    into.frames.append(message.frame)
                    if message.frame.seq >= until_seq:
                        return
            elif kind == "error":
                raise AssertionError(f"error from gateway: {message.error}")
            else:
                into.other.append(kind or "")
        raise AssertionError(
            f"socket closed ({conn.close_code}) at seq {into.seqs[-1:]} before {until_seq}"
        )

    await asyncio.wait_for(run(), timeout_s)
    return into


def assert_exact_sequence(seqs: list[int], first: int, last: int) -> None:
    """Strictly increasing by one from `first` to `last`: no gap, no duplicate, no reorder."""
    expected = list(range(first, last + 1))
    if seqs != expected:
        missing = sorted(set(expected) - set(seqs))[:10]
        dups = sorted({s for s in seqs if seqs.count(s) > 1})[:10]
        raise AssertionError(
            f"got {len(seqs)} frames, expected {len(expected)} ({first}..{last}); "
            f"missing {missing}, duplicated {dups}, first {seqs[:5]}, last {seqs[-5:]}"
        )
