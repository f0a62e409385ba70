"""The chaos checker itself must catch loss, duplication, reordering and wrong payloads
(unit tests: no I/O)."""

from __future__ import annotations

import pytest

from khala_common.topics import run_topic

from .support import Subscriber, WriterStats, canonical_digest, check

ORG = "acme"
RUN = "r1"
TOPIC = run_topic(ORG, RUN)


def _log(n: int) -> list[dict[str, object]]:
    return [
        {"event_id": f"e{i}", "stream_seq": i, "type": "run.output", "payload": {"n": i},
         "idempotency_key": f"k{i}"}
        for i in range(1, n + 1)
    ]


def _digest(i: int) -> str:
    return canonical_digest(f"e{i}", i, "run.output", {"n": i})


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
    [([1, 2, 4, 5], "missing [3]"), ([1, 2, 2, 3, 4, 5], "duplicated [2]"),
     ([1, 3, 2, 4, 5], "out of order [2]"), ([1, 2, 3, 4], "missing [5]")],
)
def test_loss_duplicates_and_reordering_are_caught(seqs: list[int], word: str) -> None:
    verdict = check(ORG, {RUN: _log(5)}, _stats(5), [_subscriber(seqs)])
    assert not verdict.ok and word in verdict.problems[0]


def test_a_frame_with_another_payload_is_caught() -> None:
    sub = _subscriber([1, 2, 3])
    sub.received[TOPIC][1] = (2, canonical_digest("e2", 2, "run.output", {"n": 99}))
    verdict = check(ORG, {RUN: _log(3)}, _stats(3), [sub])
    assert not verdict.ok and "payload differs" in verdict.problems[0]


def test_an_accepted_write_missing_from_the_log_is_caught() -> None:
    stats = _stats(3)
    stats.accepted[RUN]["k-lost"] = 4
    verdict = check(ORG, {RUN: _log(3)}, stats, [_subscriber([1, 2, 3])])
    assert not verdict.ok and "k-lost" in verdict.problems[0]
