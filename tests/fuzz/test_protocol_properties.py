"""Property tests of the gateway's protocol edge (quick; part of `make test`).

The decode path every inbound WebSocket message takes (`ProtoCodec.decode`,
`JsonCodec.decode`) must, for any input whatsoever, either return a
ClientMessage or raise DecodeError (which the handler answers with
`bad_request`): never another exception, which would kill the socket's handler.
Valid messages round-trip through both subprotocols. On the way out, the
embedded-bytes encoding equals `ServerMessage.SerializeToString()` for any
frames. The pure rules the handler applies after decoding (topic grammar,
cursor planning, sequencing, rate limiting) are total and deterministic.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from khala_common.topics import is_valid_topic, parse_topic
from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Cursor, Stale, StartPlan, TopicHead, plan_start
from khala_gateway.domain.limits import TokenBucket, below_minimum, parse_version
from khala_gateway.domain.sequencing import Decision, classify, contiguous_from, fill_range
from khala_gateway.domain.wire import (
    DecodeError,
    JsonCodec,
    ProtoCodec,
    WireFrame,
    batch_size,
    embed_batch,
    embed_frame,
)
from openagents.sync.v1 import frames_pb2, ws_pb2

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# proto3 strings cannot hold lone surrogates; everything else is fair game.
text = st.text(st.characters(codec="utf-8"), max_size=40)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
segment = st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z")
topic_like = st.one_of(
    text,
    st.builds(lambda o, c: f"org.{o}.{c}", segment, st.sampled_from(["runs", "workers"])),
    st.builds(
        lambda o, c, i: f"org.{o}.{c}.{i}", segment, st.sampled_from(["run", "worker"]), segment
    ),
)

cursors = st.builds(ws_pb2.TopicCursor, topic=topic_like, epoch=text, after_seq=u64)
client_messages = st.one_of(
    st.builds(
        lambda t, n, v: ws_pb2.ClientMessage(
            hello=ws_pb2.Hello(token=t, client_name=n, client_version=v)
        ),
        text,
        text,
        text,
    ),
    st.builds(
        lambda r, cs, s: ws_pb2.ClientMessage(
            subscribe=ws_pb2.Subscribe(request_id=r, cursors=cs, snapshot_if_stale=s)
        ),
        text,
        st.lists(cursors, max_size=5),
        st.booleans(),
    ),
    st.builds(
        lambda r, ts: ws_pb2.ClientMessage(unsubscribe=ws_pb2.Unsubscribe(request_id=r, topics=ts)),
        text,
        st.lists(topic_like, max_size=5),
    ),
    st.builds(lambda t: ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=t)), text),
    st.builds(lambda n: ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce=n)), text),
    st.just(ws_pb2.ClientMessage()),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
json_keys = st.sampled_from(
    [
        "hello",
        "subscribe",
        "unsubscribe",
        "refreshAuth",
        "refresh_auth",
        "ping",
        "cursors",
        "afterSeq",
        "after_seq",
        "topic",
        "epoch",
        "token",
        "nonce",
        "requestId",
        "snapshotIfStale",
        "topics",
        "clientName",
        "bogus",
    ]
)
json_shaped = st.recursive(
    json_values,
    lambda children: (
        st.dictionaries(json_keys, children, max_size=4) | st.lists(children, max_size=3)
    ),
    max_leaves=25,
)


def decodes_or_refuses(
    codec: ProtoCodec | JsonCodec, data: bytes | str
) -> ws_pb2.ClientMessage | None:
    """The only two outcomes the handler copes with: a message, or DecodeError."""
    try:
        message = codec.decode(data)
    except DecodeError:
        return None
    assert isinstance(message, ws_pb2.ClientMessage)
    return message


# -- inbound decode ---------------------------------------------------------------


@QUICK
@given(client_messages)
def test_valid_messages_round_trip_through_both_subprotocols(message: ws_pb2.ClientMessage) -> None:
    assert ProtoCodec().decode(message.SerializeToString()) == message
    assert JsonCodec().decode(json_format.MessageToJson(message, indent=None)) == message
    snake = json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True)
    assert JsonCodec().decode(snake) == message


@QUICK
@given(st.binary(max_size=512))
@example(b"\x0a\x80")  # truncated length
@example(b"\x12" + b"\xff" * 10)  # overlong varint
@example(b"\x0f")  # invalid wire type
def test_arbitrary_bytes_decode_or_are_refused(data: bytes) -> None:
    decodes_or_refuses(ProtoCodec(), data)


@QUICK
@given(client_messages, st.data())
def test_mutated_valid_messages_decode_or_are_refused(
    message: ws_pb2.ClientMessage, data: st.DataObject
) -> None:
    raw = bytearray(message.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    decodes_or_refuses(ProtoCodec(), bytes(raw))


@QUICK
@given(st.text(max_size=300))
@example("[" * 50_000)
@example('{"hello":' * 3_000)
@example('{"ping":{"nonce":"\\ud800"}}')
@example('{"subscribe":{"cursors":[{"afterSeq":"-1"}]}}')
@example('{"subscribe":{"cursors":[{"afterSeq":"18446744073709551616"}]}}')
@example('{"ping":{"nonce":1e400}}')
@example("NaN")
def test_arbitrary_text_decodes_or_is_refused(data: str) -> None:
    decodes_or_refuses(JsonCodec(), data)


@QUICK
@given(json_shaped)
def test_json_shaped_input_decodes_or_is_refused(value: object) -> None:
    decodes_or_refuses(JsonCodec(), json.dumps(value))


@QUICK
@given(st.binary(max_size=64), st.text(max_size=64))
def test_the_wrong_websocket_message_type_is_refused(data: bytes, text_data: str) -> None:
    assert decodes_or_refuses(JsonCodec(), data) is None
    assert decodes_or_refuses(ProtoCodec(), text_data) is None


# -- outbound encode ----------------------------------------------------------------

frames = st.builds(
    frames_pb2.KhalaFrame,
    topic=topic_like,
    seq=u64,
    kind=st.sampled_from([0, 1, 2, 3]),
    key=text,
    payload_bytes=st.binary(max_size=300),
    schema_version=text,
    epoch=text,
    published_at_ms=st.integers(-(2**63), 2**63 - 1),
)


@QUICK
@given(st.lists(frames, min_size=1, max_size=8))
def test_embedded_bytes_equal_serialized_server_messages(
    batch: list[frames_pb2.KhalaFrame],
) -> None:
    data = [f.SerializeToString() for f in batch]
    assert embed_frame(data[0]) == ws_pb2.ServerMessage(frame=batch[0]).SerializeToString()
    expected = ws_pb2.ServerMessage(frames=frames_pb2.FrameBatch(frames=batch)).SerializeToString()
    assert embed_batch(data) == expected
    assert batch_size(data) == len(expected)
    wire = [WireFrame.decode(d) for d in data]
    assert ProtoCodec().encode_frames(wire) == (
        embed_frame(data[0]) if len(data) == 1 else expected
    )
    parsed = json_format.Parse(JsonCodec().encode_frames(wire), ws_pb2.ServerMessage())
    got = [parsed.frame] if parsed.WhichOneof("body") == "frame" else list(parsed.frames.frames)
    assert got == batch


# -- the pure rules after decoding ----------------------------------------------------


@QUICK
@given(topic_like)
def test_topic_parsing_is_total_and_round_trips(name: str) -> None:
    parsed = parse_topic(name)
    if parsed is not None:
        assert is_valid_topic(name) and parsed.name == name


heads = st.builds(
    lambda epoch, oldest, extra: TopicHead(epoch, oldest + extra if oldest else extra, oldest),
    st.sampled_from(["1", "2"]),
    st.integers(0, 1000),
    st.integers(0, 1000),
)


@QUICK
@given(
    st.sampled_from(["", "1", "2"]),
    st.integers(0, 3000),
    heads,
    st.booleans(),
    st.booleans(),
    st.integers(0, 500),
)
def test_cursor_planning_is_deterministic_and_within_the_log(
    epoch: str, after: int, head: TopicHead, is_doc: bool, snap: bool, budget: int
) -> None:
    cursor = Cursor(epoch, after)
    plan = plan_start(cursor, head, is_doc=is_doc, snapshot_if_stale=snap, replay_budget=budget)
    assert plan == plan_start(
        cursor, head, is_doc=is_doc, snapshot_if_stale=snap, replay_budget=budget
    )
    if after == 0:
        assert isinstance(plan, StartPlan)  # a fresh subscription is never stale
    if isinstance(plan, Stale):
        assert plan.reason in (
            codes.RETENTION,
            codes.EPOCH_CHANGED,
            codes.CURSOR_AHEAD,
            codes.REPLAY_BUDGET,
        )
        assert plan.message
    elif plan.snapshot:
        assert is_doc and plan.after_seq == head.head_seq
    else:
        assert plan.after_seq <= head.head_seq
        assert head.oldest_seq == 0 or plan.after_seq >= head.oldest_seq - 1
        if after:
            assert plan.after_seq == after


@QUICK
@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(1, 500),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_sequencing_rules(seq: int, last: int, chunk: int, buffered: int | None) -> None:
    decision = classify(seq, last)
    assert (decision is Decision.SEND) == (seq == last + 1)
    assert (decision is Decision.DROP) == (seq <= last)
    head = max(seq, last)
    upto = fill_range(last, head, chunk, buffered)
    assert upto <= max(head, last) and upto - last <= chunk
    if buffered is not None and buffered > last:
        assert upto < buffered
    seqs = sorted(set(range(last + 1, last + 1 + chunk % 7)) | ({seq} if seq > last else set()))
    n = contiguous_from(last, seqs)
    assert seqs[:n] == list(range(last + 1, last + 1 + n))


@QUICK
@given(st.floats(0.5, 100), st.integers(1, 200), st.lists(st.floats(0, 0.2), max_size=200))
def test_token_bucket_never_allows_more_than_burst_plus_rate(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += bucket.allow(now)
    assert allowed <= burst + rate * now + 1e-6


@QUICK
@given(text, text, st.sampled_from(["web", "desktop", "ios", "onyx"]))
def test_version_checks_are_total(client_version: str, minimum: str, surface: str) -> None:
    parse_version(client_version)
    verdict = below_minimum(client_version, surface, {surface: minimum})
    assert verdict is None or verdict == minimum
