"""The chaos checker itself must catch loss, duplication, reordering and wrong payloads
(unit tests: no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from khala_common.topics import run_topic
from khala_runtime.domain.canonical import canonical_json
from khala_runtime.domain.chain import GENESIS, event_content, link
from openagents.runtime.v1 import events_pb2

from .support import Subscriber, WriterStats, canonical_digest, check

ORG = "acme"
RUN = "r1"
TOPIC = run_topic(ORG, RUN)


def _log(n: int) -> list[dict[str, Any]]:
    """Events 1..n as runtime's HTTP API returns them, with a valid hash chain."""
    events: list[dict[str, Any]] = []
    prev = GENESIS
    for i in range(1, n + 1):
        event = {
            "event_id": f"e{i}",
            "stream_seq": i,
            "type": "run.output",
            "payload": {"n": i},
            "idempotency_key": f"k{i}",
            "occurred_at_ms": 1000 + i,
            "org_id": ORG,
            "stream_id": f"run:{RUN}",
        }
        proto = events_pb2.RuntimeEvent(
            event_id=f"e{i}",
            idempotency_key=f"k{i}",
            occurred_at_ms=1000 + i,
            org_id=ORG,
            payload_json=canonical_json({"n": i}),
            stream_id=f"run:{RUN}",
            stream_seq=i,
            type="run.output",
        )
        prev = link(prev, event_content(proto))
        events.append({**event, "chain_hash": prev})
    return events


def _digest(i: int) -> str:
    return canonical_digest(f"e{i}", i, "run.output", {"n": i}, _log(i)[-1]["chain_hash"])


def _subscriber(seqs: list[int]) -> Subscriber:
    sub = Subscriber(index=0, topics=[TOPIC])
    sub.received[TOPIC] = [(s, _digest(s)) for s in seqs]
    return sub


def _stats(n: int) -> WriterStats:
    stats = WriterStats()
    stats.accepted[RUN] = {f"k{i}": i for i in range(1, n + 1)}
    return stats


def test_exact_sequence_passes_and_counts_frames() -> None:
    verdict = check(ORG, {RUN: _log(5)}, _stats(5), [_subscriber([1, 2, 3, 4, 5])])
    assert verdict.ok and verdict.frames_checked == 5 and verdict.accepted_writes == 5


@pytest.mark.parametrize(
    ("seqs", "word"),
    [
        ([1, 2, 4, 5], "missing [3]"),
        ([1, 2, 2, 3, 4, 5], "duplicated [2]"),
        ([1, 3, 2, 4, 5], "out of order [2]"),
        ([1, 2, 3, 4], "missing [5]"),
    ],
)
def test_loss_duplicates_and_reordering_are_caught(seqs: list[int], word: str) -> None:
    verdict = check(ORG, {RUN: _log(5)}, _stats(5), [_subscriber(seqs)])
    assert not verdict.ok and word in verdict.problems[0]


def test_a_frame_with_another_payload_is_caught() -> None:
    sub = _subscriber([1, 2, 3])
    sub.received[TOPIC][1] = (
        2,
        canonical_digest("e2", 2, "run.output", {"n": 99}, _log(2)[-1]["chain_hash"]),
    )
    verdict = check(ORG, {RUN: _log(3)}, _stats(3), [sub])
    assert not verdict.ok and "payload differs" in verdict.problems[0]


def test_an_accepted_write_missing_from_the_log_is_caught() -> None:
    stats = _stats(3)
    stats.accepted[RUN]["k-lost"] = 4
    verdict = check(ORG, {RUN: _log(3)}, stats, [_subscriber([1, 2, 3])])
    assert not verdict.ok and "k-lost" in verdict.problems[0]


def test_a_broken_chain_in_the_log_is_caught() -> None:
    log = _log(3)
    log[1]["payload"] = {"n": 99}  # the stored link no longer covers this content
    verdict = check(ORG, {RUN: log}, _stats(3), [])
    assert not verdict.ok and "chain broken at seq 2" in verdict.problems[0]


def test_a_receipt_whose_chain_hash_differs_from_the_log_is_caught() -> None:
    stats = _stats(3)
    stats.receipt_chain[RUN] = {2: _log(2)[-1]["chain_hash"], 3: "f" * 64}
    verdict = check(ORG, {RUN: _log(3)}, stats, [_subscriber([1, 2, 3])])
    assert verdict.problems == [f"receipt of {RUN} at seq 3: chain_hash differs from the log"]


def test_a_frame_with_another_chain_hash_is_caught() -> None:
    sub = _subscriber([1, 2])
    sub.received[TOPIC][1] = (2, canonical_digest("e2", 2, "run.output", {"n": 2}, "0" * 64))
    verdict = check(ORG, {RUN: _log(2)}, _stats(2), [sub])
    assert not verdict.ok and "payload differs" in verdict.problems[0]
