"""Wire encoding of the two subprotocols, embedding stored frame bytes unchanged.

A frame row's `frame_bytes` (also the fanout body) is a serialized KhalaFrame.
On `khala.v1+proto` it is embedded without re-parsing: ServerMessage field
`frame` (3) is `0x1a varint(len) bytes`; FrameBatch field `frames` (1) is
`0x0a varint(len) bytes` per frame and ServerMessage field `frames` (4) is
`0x22 varint(len) batch`. The result equals `ServerMessage.SerializeToString`.
On `khala.v1+json` messages are proto3 canonical JSON (json_format), one per
text message; a frame's JSON form is computed once and shared by all sockets.

For sockets whose sender is idle, delivery writes whole WebSocket messages
(RFC 6455 frames, unmasked as a server sends them) straight to the transport:
`Codec.wire_frames` / `Codec.wire` build them, and the message of a single
frame is built once per codec and shared by every socket it goes to.

`WIRE_STATS` counts frame parses and JSON encodings per process (exported by
metrics.py), which is how tests show that a frame is decoded once per fanout
message and never re-serialized per subscriber.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError

from openagents.sync.v1 import frames_pb2, ws_pb2

_FRAME_TAG = b"\x1a"
_BATCH_ENTRY_TAG = b"\x0a"
_FRAMES_TAG = b"\x22"
_WS_BINARY = 0x82  # FIN + opcode 2
_WS_TEXT = 0x81  # FIN + opcode 1


class DecodeError(ValueError):
    """An inbound message could not be decoded (answered with bad_request)."""


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class WireStats:
    """Process-wide counts of KhalaFrame parses and JSON encodings (plain integers)."""

    __slots__ = ("json_encodes", "parses")

    def __init__(self) -> None:
        self.parses = 0
        self.json_encodes = 0


WIRE_STATS = WireStats()


class WireFrame:
    """One KhalaFrame as stored bytes plus the fields delivery needs."""

    __slots__ = (
        "_json",
        "_json_text",
        "_parsed",
        "_wire_json",
        "_wire_proto",
        "data",
        "epoch",
        "seq",
    )

    def __init__(
        self, seq: int, epoch: str, data: bytes, parsed: frames_pb2.KhalaFrame | None = None
    ) -> None:
        self.seq = seq
        self.epoch = epoch
        self.data = data
        self._parsed = parsed
        self._json: dict[str, Any] | None = None
        self._json_text: str | None = None
        self._wire_proto: bytes | None = None
        self._wire_json: bytes | None = None

    @classmethod
    def decode(cls, data: bytes) -> WireFrame:
        """Parse fanout or stored bytes once; raises DecodeError if they are not a KhalaFrame."""
        WIRE_STATS.parses += 1
        try:
            frame = frames_pb2.KhalaFrame.FromString(data)
        except ProtoDecodeError as exc:
            raise DecodeError(f"not a KhalaFrame: {exc}") from None
        return cls(frame.seq, frame.epoch, data, frame)

    @property
    def topic(self) -> str:
        """The frame's topic."""
        return self.parsed().topic

    @property
    def published_at_ms(self) -> int:
        """When the projector committed the frame (its clock), 0 if unset."""
        return self.parsed().published_at_ms

    def parsed(self) -> frames_pb2.KhalaFrame:
        """The decoded frame (parsed lazily for rows read from Postgres)."""
        if self._parsed is None:
            WIRE_STATS.parses += 1
            self._parsed = frames_pb2.KhalaFrame.FromString(self.data)
        return self._parsed

    def json_dict(self) -> dict[str, Any]:
        """The frame's canonical JSON object (computed once)."""
        if self._json is None:
            WIRE_STATS.json_encodes += 1
            self._json = json_format.MessageToDict(self.parsed())
        return self._json

    def json_text(self) -> str:
        """The frame's compact canonical JSON text (computed once)."""
        if self._json_text is None:
            self._json_text = _dumps(self.json_dict())
        return self._json_text


def ws_message(payload: bytes, *, binary: bool) -> bytes:
    """One unfragmented, unmasked WebSocket message (RFC 6455 §5.2) carrying `payload`."""
    head = _WS_BINARY if binary else _WS_TEXT
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65_536:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


def embed_frame(data: bytes) -> bytes:
    """A serialized ServerMessage{frame} around stored KhalaFrame bytes."""
    return _FRAME_TAG + varint(len(data)) + data


def embed_batch(frames: Sequence[bytes]) -> bytes:
    """A serialized ServerMessage{frames: FrameBatch} around stored KhalaFrame bytes."""
    parts: list[bytes] = []
    for data in frames:
        parts.append(_BATCH_ENTRY_TAG)
        parts.append(varint(len(data)))
        parts.append(data)
    batch = b"".join(parts)
    return _FRAMES_TAG + varint(len(batch)) + batch


def batch_size(frames: Sequence[bytes]) -> int:
    """Encoded size of embed_batch(frames), without building it."""
    inner = sum(1 + len(varint(len(d))) + len(d) for d in frames)
    return 1 + len(varint(inner)) + inner


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Codec:
    """Encoding of one subprotocol; `binary` tells which WebSocket message type it uses.

    `frame_cost` and `batch_overhead` bound the size of a `frames` message:
    a batch of frames is at most `batch_overhead + sum(frame_cost(f))` bytes,
    which is how Outbox.take_round keeps every message within max_frame_bytes.
    """

    binary: bool = True
    batch_overhead: int = 0

    def frame_cost(self, frame: WireFrame) -> int:
        """Upper bound of the bytes one frame adds to a batch message."""
        raise NotImplementedError

    def encode(self, message: ws_pb2.ServerMessage) -> bytes | str:
        """One ServerMessage."""
        raise NotImplementedError

    def encode_frames(self, frames: Sequence[WireFrame]) -> bytes | str:
        """One `frame` message for a single frame, else one `frames` batch."""
        raise NotImplementedError

    def decode(self, data: bytes | str) -> ws_pb2.ClientMessage:
        """One ClientMessage; raises DecodeError."""
        raise NotImplementedError

    def wire(self, message: ws_pb2.ServerMessage) -> bytes:
        """`encode(message)` as a complete WebSocket message."""
        return _as_ws(self.encode(message))

    def wire_frames(self, frames: Sequence[WireFrame]) -> bytes:
        """`encode_frames(frames)` as a complete WebSocket message."""
        if len(frames) == 1:
            return self.wire_one(frames[0])
        return _as_ws(self.encode_frames(frames))

    def wire_one(self, frame: WireFrame) -> bytes:
        """The single-frame message of `frame` as a complete WebSocket message,
        built once per codec and shared by every socket it goes to."""
        if self.binary:
            if frame._wire_proto is None:
                frame._wire_proto = _as_ws(self.encode_frames((frame,)))
            return frame._wire_proto
        if frame._wire_json is None:
            frame._wire_json = _as_ws(self.encode_frames((frame,)))
        return frame._wire_json


def _as_ws(data: bytes | str) -> bytes:
    if isinstance(data, str):
        return ws_message(data.encode(), binary=False)
    return ws_message(data, binary=True)


class ProtoCodec(Codec):
    """`khala.v1+proto`: binary messages, frames embedded as stored."""

    binary = True
    # Tag and varint length of FrameBatch inside ServerMessage (lengths < 2^35).
    batch_overhead = 6

    def frame_cost(self, frame: WireFrame) -> int:
        """Tag, varint length (< 2^35) and bytes of one batch entry."""
        return len(frame.data) + 6

    def encode(self, message: ws_pb2.ServerMessage) -> bytes:
        """Serialized ServerMessage."""
        return message.SerializeToString()

    def encode_frames(self, frames: Sequence[WireFrame]) -> bytes:
        """Stored frame bytes embedded as `frame` or `frames`."""
        if len(frames) == 1:
            return embed_frame(frames[0].data)
        return embed_batch([f.data for f in frames])

    def decode(self, data: bytes | str) -> ws_pb2.ClientMessage:
        """A binary ClientMessage."""
        if not isinstance(data, bytes | bytearray):
            raise DecodeError("text message on khala.v1+proto; send binary messages")
        message = ws_pb2.ClientMessage()
        try:
            message.ParseFromString(bytes(data))
        except ProtoDecodeError as exc:
            raise DecodeError(f"not a ClientMessage: {exc}") from None
        return message


class JsonCodec(Codec):
    """`khala.v1+json`: text messages holding proto3 canonical JSON."""

    binary = False
    batch_overhead = len('{"frames":{"frames":[]}}')

    def frame_cost(self, frame: WireFrame) -> int:
        """The frame's UTF-8 JSON text and its separating comma."""
        text = frame.json_text()
        return (len(text) if text.isascii() else len(text.encode())) + 1

    def encode(self, message: ws_pb2.ServerMessage) -> str:
        """Canonical JSON of a ServerMessage."""
        return _dumps(json_format.MessageToDict(message))

    def encode_frames(self, frames: Sequence[WireFrame]) -> str:
        """Canonical JSON of `frame` or `frames` (each frame's JSON computed once)."""
        if len(frames) == 1:
            return '{"frame":' + frames[0].json_text() + "}"
        return '{"frames":{"frames":[' + ",".join(f.json_text() for f in frames) + "]}}"

    def decode(self, data: bytes | str) -> ws_pb2.ClientMessage:
        """A ClientMessage from canonical JSON (snake_case names accepted)."""
        if not isinstance(data, str):
            raise DecodeError("binary message on khala.v1+json; send text messages")
        message = ws_pb2.ClientMessage()
        try:
            json_format.Parse(data, message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError) as exc:
            raise DecodeError(f"not a ClientMessage: {exc}") from None
        return message


def error_message(code: str, message: str, **fields: Any) -> ws_pb2.ServerMessage:
    """A ServerMessage carrying Error{code, message, ...}."""
    return ws_pb2.ServerMessage(error=ws_pb2.Error(code=code, message=message, **fields))


def codec_for(subprotocol: str) -> Codec:
    """The codec of a negotiated subprotocol (`khala.v1+proto` when none was offered)."""
    return JsonCodec() if subprotocol == "khala.v1+json" else ProtoCodec()
