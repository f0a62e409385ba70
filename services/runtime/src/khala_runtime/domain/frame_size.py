"""The largest WebSocket message an event can become, and the refusal above a limit.

An accepted event reaches clients as a KhalaFrame whose `payload_bytes` is the
serialized RuntimeEvent, inside `ServerMessage{frame}`. Its largest encoding is
`khala.v1+json`, where the payload is base64 (4 bytes per 3). Runtime refuses
an event whose message could exceed the gateways' `max_frame_bytes` (HTTP 413
`frame_too_large`, before anything is written), so the gateway never has to
send more than its Welcome advertises.

The bound takes the widest value of everything the event does not choose
itself (64-character ids, 64-bit seqs and clocks, a 19-digit epoch), so it
depends only on the event's type, payload and idempotency key: the same event
always gets the same answer, whichever stream it is appended to.
"""

from __future__ import annotations

import json
from typing import Final

from khala_common.frame_limits import DEFAULT_MAX_FRAME_BYTES

_ID: Final = "x" * 64  # the widest org, run or worker id (a topic segment)
_EVENT_ID_CHARS: Final = 36  # a UUID's text form
_VARINT64: Final = 10  # bytes of the widest uint64 varint
_CHAIN_HASH_CHARS: Final = 64  # hex sha256


def _field(size: int) -> int:
    """Bytes of one length-delimited proto field (one-byte tag) of `size` bytes."""
    return 1 + _varint_len(size) + size


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


# RuntimeEvent fields the event does not choose: event_id, stream_id (`worker:` is the
# longer prefix), org_id, stream_kind, subject_id, stream_seq, occurred_at_ms, chain_hash.
_EVENT_FIXED: Final = (
    _field(_EVENT_ID_CHARS)
    + _field(len("worker:") + len(_ID))
    + _field(len(_ID))
    + 2
    + _field(len(_ID))
    + 2 * (1 + _VARINT64)
    + _field(_CHAIN_HASH_CHARS)
)
# The JSON message around the base64 payload, every other field at its widest.
_JSON_FIXED: Final = len(
    json.dumps(
        {
            "frame": {
                "topic": f"org.{_ID}.worker.{_ID}",
                "seq": str(2**64 - 1),
                "kind": "FRAME_KIND_EVENT",
                "key": "x" * _EVENT_ID_CHARS,
                "payloadBytes": "",
                "schemaVersion": "openagents.runtime.v1.RuntimeEvent@1",
                "epoch": str(2**63 - 1),
                "publishedAtMs": str(-(2**63)),
            }
        },
        separators=(",", ":"),
    )
)


def runtime_event_bytes(event_type: str, payload_json: bytes, idempotency_key: str) -> int:
    """Upper bound of the serialized RuntimeEvent of an event."""
    size = _EVENT_FIXED + _field(len(event_type.encode())) + _field(len(payload_json))
    if idempotency_key:
        size += _field(len(idempotency_key.encode()))
    return size


def json_frame_bytes(event_type: str, payload_json: bytes, idempotency_key: str) -> int:
    """Upper bound of the event's frame message on `khala.v1+json` (its largest encoding)."""
    payload = runtime_event_bytes(event_type, payload_json, idempotency_key)
    return _JSON_FIXED + 4 * ((payload + 2) // 3)


def frame_fits(
    event_type: str,
    payload_json: bytes,
    idempotency_key: str,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[bool, int]:
    """(whether the event's frame fits in max_frame_bytes, its bound)."""
    size = json_frame_bytes(event_type, payload_json, idempotency_key)
    return size <= max_frame_bytes, size
