"""Unit: an accepted event's frame always fits in one gateway message.

The bound of frame_size.py is checked against real encodings: a RuntimeEvent
and KhalaFrame with every field at its widest, encoded as the gateway does on
khala.v1+json (its largest encoding).
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from khala_common.frame_limits import DEFAULT_MAX_FRAME_BYTES
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.frame_size import frame_fits, json_frame_bytes
from khala_runtime.handlers.schemas import parse_append
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2, ws_pb2

WIDE_ID = "z" * 64


def widest_json_message(event_type: str, payload_json: bytes, key: str) -> int:
    """Bytes of the event's frame on khala.v1+json with every other field at its widest."""
    event = events_pb2.RuntimeEvent(
        event_id="0" * 36,
        stream_id=f"worker:{WIDE_ID}",
        org_id=WIDE_ID,
        stream_kind=events_pb2.STREAM_KIND_WORKER,
        subject_id=WIDE_ID,
        stream_seq=2**64 - 1,
        type=event_type,
        payload_json=payload_json,
        idempotency_key=key,
        occurred_at_ms=-(2**63),
        chain_hash="f" * 64,
    )
    frame = frames_pb2.KhalaFrame(
        topic=f"org.{WIDE_ID}.worker.{WIDE_ID}",
        seq=2**64 - 1,
        kind=frames_pb2.FRAME_KIND_EVENT,
        key=event.event_id,
        payload_bytes=event.SerializeToString(),
        schema_version="openagents.runtime.v1.RuntimeEvent@1",
        epoch=str(2**63 - 1),
        published_at_ms=-(2**63),
    )
    text = json.dumps(
        json_format.MessageToDict(ws_pb2.ServerMessage(frame=frame)),
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return len(text.encode())


@pytest.mark.parametrize("size", [0, 1, 2, 3, 127, 128, 16_383, 16_384, 100_000, 786_000])
@pytest.mark.parametrize("key", ["", "k", "ключ-" * 50])
def test_bound_covers_the_real_encoding(size: int, key: str) -> None:
    payload = b'{"text":"' + b"a" * size + b'"}'
    actual = widest_json_message("worker.event", payload, key)
    bound = json_frame_bytes("worker.event", payload, key)
    assert actual <= bound <= actual + 16


def test_largest_accepted_payload_fits_and_the_next_does_not() -> None:
    def payload(n: int) -> bytes:
        return b'{"text":"' + b"a" * n + b'"}'

    low, high = 0, DEFAULT_MAX_FRAME_BYTES
    while low + 1 < high:  # largest n that fits
        mid = (low + high) // 2
        low, high = (mid, high) if frame_fits("run.output", payload(mid), "")[0] else (low, mid)
    assert widest_json_message("run.output", payload(low), "") <= DEFAULT_MAX_FRAME_BYTES
    assert not frame_fits("run.output", payload(low + 4), "")[0]
    assert low > 780_000  # the limit costs only base64 and the frame's envelope


def test_issue_payload_is_refused_with_frame_too_large() -> None:
    """A 1,040,000-byte payload (under the 1 MiB body cap) became a 1,387,304-byte
    JSON message; it is now refused before anything is written."""
    body = {
        "events": [
            {"type": "run.started"},
            {"type": "run.output", "payload": {"text": "a" * 1_040_000}},
        ]
    }
    with pytest.raises(DomainError) as refused:
        parse_append(body)
    assert refused.value.code == "frame_too_large"
    assert refused.value.details["field"] == "events[1].payload"
    assert refused.value.details["frame_bytes"] > DEFAULT_MAX_FRAME_BYTES
