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

from khala_runtime.domain.canonical import canonical_json
from openagents.runtime.v1.events_pb2 import RuntimeEvent

GENESIS = "0" * 64


def event_content(event: RuntimeEvent) -> bytes:
    """The canonical content bytes of `event` that its chain link covers."""
    # Keys sort as: event_id, idempotency_key, occurred_at_ms, org_id | payload |
    # stream_id, stream_seq, type; the payload bytes are spliced in unchanged.
    head = canonical_json(
        {
            "event_id": event.event_id,
            "idempotency_key": event.idempotency_key,
            "occurred_at_ms": event.occurred_at_ms,
            "org_id": event.org_id,
        }
    )
    tail = canonical_json(
        {"stream_id": event.stream_id, "stream_seq": event.stream_seq, "type": event.type}
    )
    payload = event.payload_json or b"{}"
    return head[:-1] + b',"payload":' + payload + b"," + tail[1:]


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
