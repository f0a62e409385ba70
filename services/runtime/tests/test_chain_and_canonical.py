"""Unit: canonical JSON and the per-stream hash chain."""

from __future__ import annotations

import hashlib
import json

import pytest

from khala_runtime.domain.append import StreamRef, link_events
from khala_runtime.domain.canonical import canonical_json
from khala_runtime.domain.chain import GENESIS, ChainChecker, event_content, link, verify_chain
from openagents.runtime.v1.events_pb2 import STREAM_KIND_RUN, EventInput, RuntimeEvent


def test_canonical_json_sorts_and_compacts() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": None, "c": True}]}) == (
        b'{"a":[1,{"c":true,"d":null}],"b":1}'
    )


def test_canonical_json_is_utf8_not_escaped() -> None:
    assert canonical_json({"t": "é✓"}) == '{"t":"é✓"}'.encode()


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"a": float("-inf")}])
def test_canonical_json_refuses_non_finite(bad: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


def _event(seq: int, payload: dict[str, object], prev: str) -> RuntimeEvent:
    event = RuntimeEvent(
        event_id=f"00000000-0000-4000-8000-{seq:012d}",
        stream_id="run:r1",
        org_id="acme",
        subject_id="r1",
        stream_seq=seq,
        type="run.output",
        payload_json=canonical_json(payload),
        idempotency_key=f"k{seq}",
        occurred_at_ms=1_700_000_000_000 + seq,
    )
    event.chain_hash = link(prev, event_content(event))
    return event


def _chain(n: int) -> list[RuntimeEvent]:
    events, prev = [], GENESIS
    for seq in range(1, n + 1):
        event = _event(seq, {"text": f"line {seq}", "n": seq}, prev)
        events.append(event)
        prev = event.chain_hash
    return events


def test_content_is_canonical_json_of_the_event() -> None:
    event = _event(3, {"text": "hi", "z": [1, 2]}, GENESIS)
    expected = canonical_json(
        {
            "event_id": event.event_id,
            "idempotency_key": "k3",
            "occurred_at_ms": event.occurred_at_ms,
            "org_id": "acme",
            "payload": json.loads(event.payload_json),
            "stream_id": "run:r1",
            "stream_seq": 3,
            "type": "run.output",
        }
    )
    assert event_content(event) == expected


def test_link_is_sha256_of_prev_hex_and_content() -> None:
    event = _event(1, {}, GENESIS)
    assert GENESIS == "0" * 64
    expected = hashlib.sha256(GENESIS.encode() + event_content(event)).hexdigest()
    assert event.chain_hash == expected


def test_chain_verifies() -> None:
    assert verify_chain(_chain(5))


def test_tampered_payload_breaks_chain() -> None:
    events = _chain(5)
    events[2].payload_json = canonical_json({"text": "forged", "n": 3})
    assert not verify_chain(events)


def test_dropped_or_reordered_event_breaks_chain() -> None:
    events = _chain(4)
    assert not verify_chain([events[0], events[2], events[3]])
    assert not verify_chain([events[1], events[0], events[2]])


def test_verify_from_a_midpoint() -> None:
    events = _chain(4)
    assert verify_chain(events[2:], prev_hash=events[1].chain_hash)
    assert not verify_chain(events[2:])


def _chain(n: int) -> list[RuntimeEvent]:
    return list(
        link_events(
            StreamRef(STREAM_KIND_RUN, "run:r", "r", "o"),
            last_seq=0,
            prev_hash=GENESIS,
            inputs=[EventInput(type="run.output", payload_json=b'{"i":%d}' % i) for i in range(n)],
            occurred_at_ms=1,
            event_ids=[f"00000000-0000-4000-8000-{i:012d}" for i in range(n)],
        )
    )


def test_chain_checker_accepts_an_intact_stream() -> None:
    events = _chain(5)
    checker = ChainChecker()
    assert all(checker.feed(e) is None for e in events)
    assert checker.finish(5, events[-1].chain_hash) is None


def test_chain_checker_reports_the_first_broken_link() -> None:
    events = _chain(5)
    events[2].payload_json = b'{"i":99}'
    checker = ChainChecker()
    results = [checker.feed(e) for e in events]
    assert results[:2] == [None, None]
    broken = checker.finish(5, events[-1].chain_hash)
    assert broken is not None and (broken.stream_seq, broken.reason) == (3, "chain_mismatch")
    assert broken.actual == events[2].chain_hash != broken.expected

    gap = ChainChecker()
    for event in events[:2] + events[3:]:
        gap.feed(event)
    assert gap.broken is not None and (gap.broken.stream_seq, gap.broken.reason) == (3, "seq_gap")

    events = _chain(3)
    short = ChainChecker()
    for event in events[:2]:
        short.feed(event)
    missing_tail = short.finish(3, events[-1].chain_hash)
    assert missing_tail is not None and (missing_tail.stream_seq, missing_tail.reason) == (
        3,
        "seq_gap",
    )
    wrong_head = ChainChecker()
    for event in events:
        wrong_head.feed(event)
    mismatch = wrong_head.finish(3, "f" * 64)
    assert mismatch is not None and mismatch.reason == "head_mismatch"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        'quo"te',
        "back\\slash",
        "tab\tnew\nline\x01",
        "ünïcödé ✓ 😀",
        "\u2028\u2029",
        "</script>",
        "\x7f\u0085",
    ],
)
def test_content_escapes_strings_exactly_like_canonical_json(text: str) -> None:
    event = RuntimeEvent(
        event_id="00000000-0000-4000-8000-000000000001",
        stream_id=f"run:{text}",
        org_id=text,
        stream_kind=STREAM_KIND_RUN,
        subject_id="r",
        stream_seq=2**40,
        type=text,
        payload_json=canonical_json({"t": text}),
        idempotency_key=text,
        occurred_at_ms=-5,
    )
    expected = canonical_json(
        {
            "event_id": event.event_id,
            "idempotency_key": text,
            "occurred_at_ms": -5,
            "org_id": text,
            "payload": {"t": text},
            "stream_id": f"run:{text}",
            "stream_seq": 2**40,
            "type": text,
        }
    )
    assert event_content(event) == expected
