"""Idempotent appends.

Each event may carry an idempotency key, unique per stream. An accepted append
records every key it carried with the hash of the whole request and its
receipt. A later request whose keys were all recorded by one earlier request
with the same hash is a replay and gets that receipt back unchanged. Any other
overlap with recorded keys (different content, or a mix of new and recorded
keys) is `idempotency_conflict`. A request without keys is never deduplicated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from khala_runtime.domain.canonical import canonical_string
from khala_runtime.domain.errors import DomainError
from openagents.runtime.v1.events_pb2 import EventInput, Receipt


@dataclass(frozen=True)
class KeyRecord:
    """A recorded idempotency key of a stream."""

    key: str
    request_hash: str
    receipt: Receipt


def request_hash(events: Sequence[EventInput]) -> str:
    """sha256 hex over the (type, key, canonical payload) of every event, in order."""
    digest = hashlib.sha256()
    for event in events:
        payload = event.payload_json or b"{}"
        # The JSON header is self-delimiting and carries the payload length,
        # so no two different requests produce the same byte stream.
        # canonical_json([type, key, len(payload)]), assembled directly (hot path).
        digest.update(
            b"["
            + canonical_string(event.type)
            + b","
            + canonical_string(event.idempotency_key)
            + b",%d]" % len(payload)
        )
        digest.update(payload)
    return digest.hexdigest()


def request_keys(events: Sequence[EventInput]) -> list[str]:
    """The non-empty idempotency keys of a request, in order."""
    return [event.idempotency_key for event in events if event.idempotency_key]


def replayed_receipt(
    keys: Sequence[str], found: Sequence[KeyRecord], req_hash: str
) -> Receipt | None:
    """The original receipt if this request repeats an accepted one, None if its keys are new."""
    if not found:
        return None
    hashes = {record.request_hash for record in found}
    if len(found) == len(set(keys)) and hashes == {req_hash}:
        return found[0].receipt
    recorded = sorted(record.key for record in found)
    raise DomainError(
        "idempotency_conflict",
        "idempotency key(s) already used by a different request: " + ", ".join(recorded),
        keys=recorded,
    )
