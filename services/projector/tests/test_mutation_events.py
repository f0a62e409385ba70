"""Unit: the exact refusals and reads of domain/events.py (docs/mutation.md).

Each refusal names what is wrong (the reason the consumer logs before the
broker dead-letters the message), so the tests pin the reason, not only the
exception type.
"""

from __future__ import annotations

import pytest
from projector_testkit import make_event

from khala_projector.domain.events import (
    BATCH_TYPE,
    InvalidEvent,
    StreamKind,
    StreamRef,
    decode_event,
    decode_events,
    payload_of,
    stream_of,
    stream_ref,
    text_field,
    truncate_utf8,
)
from openagents.runtime.v1.events_pb2 import RuntimeEvent, RuntimeEventBatch


def _refusal(event: RuntimeEvent) -> str:
    with pytest.raises(InvalidEvent) as caught:
        stream_of(event)
    return str(caught.value)


def test_stream_id_without_subject_is_refused_as_such():
    event = make_event("acme", "run:r1", 1, "run.created")
    event.stream_id = "run:"
    event.subject_id = ""
    assert _refusal(event) == "stream_id 'run:' has no subject id"
    event.stream_id = "run"
    assert _refusal(event) == "stream_id 'run' has no subject id"


def test_unknown_prefix_names_the_stream_id():
    event = make_event("acme", "run:r1", 1, "run.created")
    event.stream_id = "job:r1"
    assert _refusal(event) == "stream_id 'job:r1' is not run:<id> or worker:<id>"


def test_subject_with_a_colon_is_not_a_segment():
    # The first colon separates the kind: "run:a:b" is a run whose id "a:b"
    # cannot be a topic segment.
    event = make_event("acme", "run:r1", 1, "run.created")
    event.stream_id = "run:a:b"
    event.subject_id = "a:b"
    assert _refusal(event) == "org_id and subject id must be topic segments [A-Za-z0-9_-]{1,64}"


def test_kind_and_subject_mismatch_reasons():
    event = make_event("acme", "worker:w1", 1, "worker.heartbeat")
    event.stream_id = "run:w1"
    assert _refusal(event) == "stream_kind does not match stream_id 'run:w1'"
    event = make_event("acme", "run:r1", 1, "run.created")
    event.subject_id = "r2"
    assert _refusal(event) == "subject_id 'r2' does not match 'run:r1'"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("org_id", "ac.me", "org_id and subject id must be topic segments [A-Za-z0-9_-]{1,64}"),
        ("stream_seq", 0, "stream_seq must be >= 1"),
        ("event_id", "", "event_id is empty"),
        ("type", "", "type is empty"),
    ],
)
def test_field_refusals_name_the_field(field: str, value: object, reason: str):
    event = make_event("acme", "run:r1", 1, "run.created")
    setattr(event, field, value)
    assert _refusal(event) == reason


def test_undecodable_body_reason():
    with pytest.raises(
        InvalidEvent, match=r"^body is not an openagents\.runtime\.v1\.RuntimeEvent: "
    ):
        decode_event(b"\xff\xff\xff")


def test_decode_events_reads_one_event_without_the_batch_header():
    event = make_event("acme", "run:r1", 1, "run.created")
    for type_name in (None, "openagents.runtime.v1.RuntimeEvent"):
        [(decoded, stream)] = decode_events(event.SerializeToString(), type_name)
        assert decoded == event
        assert stream == StreamRef("run:r1", StreamKind.RUN, "acme", "r1")


def test_decode_events_reads_every_event_of_a_batch_in_order():
    events = [
        make_event("acme", "run:r1", 1, "run.created"),
        make_event("acme", "worker:w1", 7, "worker.heartbeat"),
    ]
    body = RuntimeEventBatch(events=events).SerializeToString()
    decoded = decode_events(body, BATCH_TYPE)
    assert [e for e, _ in decoded] == events
    assert [s for _, s in decoded] == [
        StreamRef("run:r1", StreamKind.RUN, "acme", "r1"),
        StreamRef("worker:w1", StreamKind.WORKER, "acme", "w1"),
    ]


def test_decode_events_refusals():
    with pytest.raises(InvalidEvent) as caught:
        decode_events(b"", BATCH_TYPE)
    assert str(caught.value) == f"{BATCH_TYPE} carries no event"
    with pytest.raises(InvalidEvent, match=rf"^body is not an {BATCH_TYPE}: "):
        decode_events(b"\xff\xff\xff", BATCH_TYPE)
    bad = make_event("acme", "run:r1", 1, "run.created")
    bad.type = ""
    body = RuntimeEventBatch(
        events=[make_event("acme", "run:r1", 1, "run.created"), bad]
    ).SerializeToString()
    with pytest.raises(InvalidEvent, match=r"^type is empty$"):
        decode_events(body, BATCH_TYPE)


def test_stream_ref_of_a_checkpoint():
    assert stream_ref("run:r1", "acme") == StreamRef("run:r1", StreamKind.RUN, "acme", "r1")
    assert stream_ref("worker:w-2", "o_1") == StreamRef(
        "worker:w-2", StreamKind.WORKER, "o_1", "w-2"
    )


@pytest.mark.parametrize(
    ("stream_id", "org_id", "reason"),
    [
        ("job:r1", "acme", "stream_id 'job:r1' is not run:<id> or worker:<id>"),
        ("run:a:b", "acme", "stream 'run:a:b' of org 'acme' has no valid topic segments"),
        ("run:r1", "ac.me", "stream 'run:r1' of org 'ac.me' has no valid topic segments"),
        ("run:r.1", "acme", "stream 'run:r.1' of org 'acme' has no valid topic segments"),
        ("run:", "acme", "stream 'run:' of org 'acme' has no valid topic segments"),
    ],
)
def test_stream_ref_refusals(stream_id: str, org_id: str, reason: str):
    with pytest.raises(InvalidEvent) as caught:
        stream_ref(stream_id, org_id)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("payload_json", "expected"),
    [
        (b"", {}),
        (b'{"a": 1}', {"a": 1}),
        (b"[1, 2]", {}),
        (b'"text"', {}),
        (b"not json", {}),
    ],
)
def test_payload_of_reads_only_json_objects(payload_json: bytes, expected: dict[str, object]):
    event = make_event("acme", "run:r1", 1, "run.created")
    event.payload_json = payload_json
    assert payload_of(event) == expected


def test_text_field_first_present_name_and_canonical_json():
    payload = {"a": None, "b": {"z": 1, "y": "é"}, "c": "plain"}
    assert text_field(payload, "missing", "a", "c", "b") == "plain"
    assert text_field(payload, "b", "c") == '{"y":"é","z":1}'
    assert text_field(payload, "a", "missing") is None
    assert text_field({"n": [1, 2]}, "n") == "[1,2]"


def test_truncate_utf8_keeps_whole_characters():
    assert truncate_utf8("abc", 3) == "abc"
    assert truncate_utf8("abcd", 3) == "abc"
    assert truncate_utf8("aé", 2) == "a"
    assert truncate_utf8("aé", 3) == "aé"
