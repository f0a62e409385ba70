"""Unit tests: embedded frame bytes encode exactly like ServerMessage.SerializeToString."""

import json

import pytest
from google.protobuf import json_format

from khala_gateway.domain.wire import (
    DecodeError,
    JsonCodec,
    ProtoCodec,
    WireFrame,
    batch_size,
    codec_for,
    embed_batch,
    embed_frame,
    varint,
)
from openagents.sync.v1 import frames_pb2, ws_pb2


def _frame(seq: int, payload: bytes = b"p") -> frames_pb2.KhalaFrame:
    return frames_pb2.KhalaFrame(
        topic="org.acme.run.r1",
        seq=seq,
        kind=frames_pb2.FRAME_KIND_EVENT,
        key=f"evt_{seq}",
        payload_bytes=payload,
        schema_version="openagents.runtime.v1.RuntimeEvent@1",
        epoch="1",
        published_at_ms=1767225601200 + seq,
    )


@pytest.mark.parametrize("value", [1, 127, 128, 300, 16383, 16384, 2**21, 2**35, 2**63])
def test_varint_matches_protobuf(value: int) -> None:
    encoded = frames_pb2.KhalaFrame(seq=value).SerializeToString()
    assert encoded == b"\x10" + varint(value)


def test_varint_of_zero_and_negative() -> None:
    assert varint(0) == b"\x00"
    with pytest.raises(ValueError):
        varint(-1)


@pytest.mark.parametrize("size", [0, 1, 120, 127, 128, 5000, 70000])
def test_embedded_frame_equals_serialized_server_message(size: int) -> None:
    frame = _frame(7, b"x" * size)
    data = frame.SerializeToString()
    assert embed_frame(data) == ws_pb2.ServerMessage(frame=frame).SerializeToString()


@pytest.mark.parametrize("count", [2, 3, 50])
def test_embedded_batch_equals_serialized_server_message(count: int) -> None:
    frames = [_frame(i, b"y" * (i * 37)) for i in range(1, count + 1)]
    data = [f.SerializeToString() for f in frames]
    expected = ws_pb2.ServerMessage(frames=frames_pb2.FrameBatch(frames=frames)).SerializeToString()
    assert embed_batch(data) == expected
    assert batch_size(data) == len(expected)


def test_proto_codec_uses_frame_for_one_and_frames_for_many() -> None:
    codec = ProtoCodec()
    one = [WireFrame(1, "1", _frame(1).SerializeToString())]
    two = [WireFrame(i, "1", _frame(i).SerializeToString()) for i in (1, 2)]
    assert ws_pb2.ServerMessage.FromString(codec.encode_frames(one)).WhichOneof("body") == "frame"
    decoded = ws_pb2.ServerMessage.FromString(codec.encode_frames(two))
    assert [f.seq for f in decoded.frames.frames] == [1, 2]


def test_json_codec_is_canonical_proto3_json() -> None:
    codec = JsonCodec()
    frames = [WireFrame.decode(_frame(i, b"\x00\xff").SerializeToString()) for i in (41, 42)]
    text = codec.encode_frames(frames)
    parsed = json_format.Parse(text, ws_pb2.ServerMessage())
    assert list(parsed.frames.frames) == [_frame(41, b"\x00\xff"), _frame(42, b"\x00\xff")]
    raw = json.loads(text)
    first = raw["frames"]["frames"][0]
    assert first["seq"] == "41"  # 64-bit integers are strings
    assert first["kind"] == "FRAME_KIND_EVENT"
    assert first["payloadBytes"] == "AP8="
    single = json.loads(codec.encode_frames(frames[:1]))
    assert single["frame"]["key"] == "evt_41"
    welcome = json.loads(
        codec.encode(ws_pb2.ServerMessage(welcome=ws_pb2.Welcome(heartbeat_interval_ms=15000)))
    )
    assert welcome == {"welcome": {"heartbeatIntervalMs": 15000}}


def test_decoding_client_messages() -> None:
    hello = ws_pb2.ClientMessage(hello=ws_pb2.Hello(token="t", client_name="c"))
    assert ProtoCodec().decode(hello.SerializeToString()) == hello
    assert JsonCodec().decode('{"hello":{"token":"t","clientName":"c"}}') == hello
    snake = JsonCodec().decode(
        '{"subscribe":{"request_id":"r","cursors":[{"topic":"t","after_seq":"4"}]}}'
    )
    assert snake.subscribe.cursors[0].after_seq == 4
    with pytest.raises(DecodeError):
        ProtoCodec().decode("text")
    with pytest.raises(DecodeError):
        ProtoCodec().decode(b"\xff\xff\xff")
    with pytest.raises(DecodeError):
        JsonCodec().decode(b"{}")
    with pytest.raises(DecodeError):
        JsonCodec().decode("{not json")
    assert isinstance(codec_for("khala.v1+json"), JsonCodec)
    assert isinstance(codec_for("khala.v1+proto"), ProtoCodec)


def test_wire_frame_decode_rejects_garbage() -> None:
    with pytest.raises(DecodeError):
        WireFrame.decode(b"\xff\xff")
