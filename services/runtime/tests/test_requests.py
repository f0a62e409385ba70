"""Unit: request validation names the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from khala_runtime.domain.errors import DomainError, ValidationError
from khala_runtime.domain.requests import (
    MAX_EVENTS_PER_APPEND,
    make_cursor,
    parse_cursor,
    payload_from_bytes,
)
from khala_runtime.handlers.schemas import (
    EventsQuery,
    ListQuery,
    decode_query,
    parse_append,
    parse_create_run,
)


def new_id() -> str:
    return "generated"


def test_create_defaults() -> None:
    create = parse_create_run({"org_id": "acme"}, new_id)
    assert (create.org_id, create.run_id, create.title) == ("acme", "generated", "")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "org_id"),
        ({"org_id": "a.b"}, "org_id"),
        ({"org_id": "acme", "run_id": "has space"}, "run_id"),
        ({"org_id": "acme", "run_id": "x" * 65}, "run_id"),
        ({"org_id": "acme", "title": 5}, "title"),
        ({"org_id": "acme", "surprise": 1}, "surprise"),
    ],
)
def test_create_errors(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_create_run(body, new_id)
    assert info.value.field == field


def test_append_canonicalizes_payloads() -> None:
    events, expected = parse_append(
        {
            "events": [
                {"type": "run.output", "payload": {"b": 1, "a": "x"}, "idempotency_key": "k"},
                {"type": "run.paused"},
            ],
            "expected_seq": 4,
        }
    )
    assert events[0].payload_json == b'{"a":"x","b":1}'
    assert events[1].payload_json == b"{}" and events[1].idempotency_key == ""
    assert expected == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "events"),
        ({"events": []}, "events"),
        ({"events": {}}, "events"),
        ({"events": [1]}, "events[0]"),
        ({"events": [{}]}, "events[0].type"),
        ({"events": [{"type": "run.output", "payload": [1]}]}, "events[0].payload"),
        ({"events": [{"type": "run.output", "payload": {"x": float("nan")}}]}, "events[0].payload"),
        ({"events": [{"type": "run.output", "payload": {"text": 3}}]}, "events[0].payload.text"),
        (
            {"events": [{"type": "run.failed", "payload": {"reason": {}}}]},
            "events[0].payload.reason",
        ),
        ({"events": [{"type": "run.output", "idempotency_key": 7}]}, "events[0].idempotency_key"),
        (
            {"events": [{"type": "run.output", "idempotency_key": "a\nb"}]},
            "events[0].idempotency_key",
        ),
        (
            {"events": [{"type": "run.output", "idempotency_key": "k" * 256}]},
            "events[0].idempotency_key",
        ),
        (
            {
                "events": [
                    {"type": "run.output", "idempotency_key": "k"},
                    {"type": "run.output", "idempotency_key": "k"},
                ]
            },
            "events[1].idempotency_key",
        ),
        ({"events": [{"type": "run.output", "extra": 1}]}, "events[0].extra"),
        ({"events": [{"type": "run.output"}], "expected_seq": -1}, "expected_seq"),
        ({"events": [{"type": "run.output"}], "expected_seq": True}, "expected_seq"),
        ({"events": [{"type": "run.output"}], "expected_seq": "3"}, "expected_seq"),
        ({"events": [{"type": "run.output"}] * (MAX_EVENTS_PER_APPEND + 1)}, "events"),
    ],
)
def test_append_errors(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_append(body)
    assert info.value.field == field
    assert field in info.value.message


def test_unknown_event_type_has_its_own_code() -> None:
    with pytest.raises(DomainError) as info:
        parse_append({"events": [{"type": "run.teleported"}]})
    assert info.value.code == "unknown_event_type"
    assert info.value.details["field"] == "events[0].type"


def test_payload_bytes() -> None:
    assert payload_from_bytes(b"", "p") == b"{}"
    assert payload_from_bytes(b'{ "b":1, "a":2 }', "p") == b'{"a":2,"b":1}'
    for bad in (b"\xff", b"[1]", b"{", b'{"a": NaN}'):
        with pytest.raises(ValidationError):
            payload_from_bytes(bad, "p")


def test_int_params() -> None:
    assert decode_query(EventsQuery, {}).limit == 100
    assert decode_query(EventsQuery, {"limit": "", "after_seq": ""}).after_seq == 0
    assert decode_query(EventsQuery, {"limit": "7"}).limit == 7
    for bad in ("x", "0", "1001"):
        with pytest.raises(ValidationError) as info:
            decode_query(EventsQuery, {"limit": bad})
        assert info.value.field == "limit"
    with pytest.raises(ValidationError) as info:
        decode_query(EventsQuery, {"after_seq": "-1"})
    assert info.value.field == "after_seq"


def test_list_query_needs_an_org() -> None:
    for query in ({}, {"org_id": "a.b"}, {"org_id": "acme\n"}):
        with pytest.raises(ValidationError) as info:
            decode_query(ListQuery, query)
        assert info.value.field == "org_id"


def test_cursor_round_trip() -> None:
    assert parse_cursor(make_cursor(123, "run_a")) == (123, "run_a")
    assert parse_cursor(None) is None
    with pytest.raises(ValidationError):
        parse_cursor("abc")
