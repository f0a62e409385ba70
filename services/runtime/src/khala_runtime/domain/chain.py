"""The per-stream hash chain.

    chain_hash(n) = sha256_hex( chain_hash(n-1) as ASCII hex || content(n) )
    chain_hash(0) = "0" * 64

content(n) is the canonical JSON object of the event's fields
`{event_id, idempotency_key, occurred_at_ms, org_id, payload, stream_id,
stream_seq, type}` where `payload` is the stored `payload_json` bytes
verbatim (already canonical JSON). Anyone holding a stream's events can
recompute every link; changing, dropping or reordering an event breaks all
later hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from khala_runtime.domain.canonical import canonical_string
from openagents.runtime.v1.events_pb2 import RuntimeEvent

GENESIS = "0" * 64


def event_content(event: RuntimeEvent) -> bytes:
    """The canonical content bytes of `event` that its chain link covers."""
    # Exactly canonical_json of the content object (keys in sorted order), with
    # the payload bytes spliced in unchanged; assembled directly because this
    # runs for every appended event.
    return b"".join(
        (
            b'{"event_id":',
            canonical_string(event.event_id),
            b',"idempotency_key":',
            canonical_string(event.idempotency_key),
            b',"occurred_at_ms":',
            b"%d" % event.occurred_at_ms,
            b',"org_id":',
            canonical_string(event.org_id),
            b',"payload":',
            event.payload_json or b"{}",
            b',"stream_id":',
            canonical_string(event.stream_id),
            b',"stream_seq":',
            b"%d" % event.stream_seq,
            b',"type":',
            canonical_string(event.type),
            b"}",
        )
    )


def link(prev_hash: str, content: bytes) -> str:
    """The chain hash following `prev_hash` for an event with `content`."""
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


def verify_chain(events: Iterable[RuntimeEvent], prev_hash: str = GENESIS) -> bool:
    """Whether each event's chain_hash links to the one before it."""
    for event in events:
        expected = link(prev_hash, event_content(event))
        if event.chain_hash != expected:
            return False
        prev_hash = expected
    return True


@dataclass(frozen=True)
class ChainBreak:
    """The first broken link of a stream: where, why, and the two values that differ."""

    stream_seq: int
    reason: str
    """`seq_gap`, `chain_mismatch` or `head_mismatch`."""
    expected: str
    actual: str


class ChainChecker:
    """Recomputes a stream's chain event by event, from stream_seq 1, and
    reports the first broken link (then stays broken)."""

    def __init__(self) -> None:
        self.prev_hash = GENESIS
        self.last_seq = 0
        self.broken: ChainBreak | None = None

    def feed(self, event: RuntimeEvent) -> ChainBreak | None:
        """Check the next event of the stream; the first break found so far."""
        if self.broken is not None:
            return self.broken
        if event.stream_seq != self.last_seq + 1:
            self.broken = ChainBreak(
                self.last_seq + 1, "seq_gap", str(self.last_seq + 1), str(event.stream_seq)
            )
            return self.broken
        expected = link(self.prev_hash, event_content(event))
        if event.chain_hash != expected:
            self.broken = ChainBreak(event.stream_seq, "chain_mismatch", expected, event.chain_hash)
            return self.broken
        self.prev_hash = expected
        self.last_seq = event.stream_seq
        return None

    def finish(self, head_seq: int, head_hash: str) -> ChainBreak | None:
        """Compare the recomputed end of the chain with the stream's recorded head."""
        if self.broken is not None:
            return self.broken
        if head_seq > self.last_seq:
            self.broken = ChainBreak(
                self.last_seq + 1,
                "seq_gap",
                f"log up to {head_seq}",
                f"log ends at {self.last_seq}",
            )
        elif head_seq < self.last_seq:
            self.broken = ChainBreak(
                head_seq + 1,
                "head_mismatch",
                f"head at {head_seq}",
                f"log goes on to {self.last_seq}",
            )
        elif head_hash != self.prev_hash:
            self.broken = ChainBreak(head_seq, "head_mismatch", self.prev_hash, head_hash)
        return self.broken
