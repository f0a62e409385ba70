"""Unit: idempotency request hash and replay resolution."""

from __future__ import annotations

import pytest

from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.idempotency import (
    KeyRecord,
    replayed_receipt,
    request_hash,
    request_keys,
)
from openagents.runtime.v1.events_pb2 import EventInput, Receipt


def ev(type_: str = "run.output", payload: bytes = b'{"text":"a"}', key: str = "k1") -> EventInput:
    return EventInput(type=type_, payload_json=payload, idempotency_key=key)


def test_hash_is_stable_and_hex() -> None:
    h = request_hash([ev(), ev(key="k2")])
    assert h == request_hash([ev(), ev(key="k2")])
    assert len(h) == 64 and int(h, 16) >= 0


@pytest.mark.parametrize(
    "other",
    [
        [ev(payload=b'{"text":"b"}'), ev(key="k2")],
        [ev(type_="run.paused"), ev(key="k2")],
        [ev(key="k9"), ev(key="k2")],
        [ev(key="k2"), ev()],
        [ev()],
    ],
)
def test_hash_changes_with_any_content(other: list[EventInput]) -> None:
    assert request_hash(other) != request_hash([ev(), ev(key="k2")])


def test_hash_has_no_boundary_ambiguity() -> None:
    a = [ev(payload=b'{"a":"x"}', key="k"), ev(payload=b"{}", key="")]
    b = [ev(payload=b'{"a":"x"}{}', key="k")]
    assert request_hash(a) != request_hash(b)


def test_empty_payload_hashes_as_empty_object() -> None:
    assert request_hash([ev(payload=b"")]) == request_hash([ev(payload=b"{}")])


def test_request_keys_skips_unkeyed() -> None:
    assert request_keys([ev(key="a"), ev(key=""), ev(key="b")]) == ["a", "b"]


RECEIPT = Receipt(
    stream_id="run:r", first_seq=2, last_seq=3, event_ids=["e1", "e2"], chain_hash="ab" * 32
)


def test_new_keys_are_not_a_replay() -> None:
    assert replayed_receipt(["a"], [], "h") is None


def test_same_request_replays_receipt() -> None:
    found = [KeyRecord("a", "h", RECEIPT), KeyRecord("b", "h", RECEIPT)]
    assert replayed_receipt(["a", "b"], found, "h") == RECEIPT


def test_same_key_different_body_conflicts() -> None:
    with pytest.raises(DomainError) as info:
        replayed_receipt(["a"], [KeyRecord("a", "other", RECEIPT)], "h")
    assert info.value.code == "idempotency_conflict"
    assert info.value.details["keys"] == ["a"]


def test_mix_of_new_and_recorded_keys_conflicts() -> None:
    with pytest.raises(DomainError) as info:
        replayed_receipt(["a", "new"], [KeyRecord("a", "h", RECEIPT)], "h")
    assert info.value.code == "idempotency_conflict"
