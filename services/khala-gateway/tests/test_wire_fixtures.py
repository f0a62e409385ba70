"""The gateway's encoder produces exactly the golden messages of proto/fixtures/.

Server fixtures (except those that carry unknown fields, which no Khala server
sends) are encoded from their canonical form by both codecs, and frame
messages also through the stored-bytes path (`encode_frames`, `wire_frames`).
Client fixtures, unknown fields included, decode to their canonical form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from khala_gateway.domain.wire import JsonCodec, ProtoCodec, WireFrame, ws_message
from openagents.sync.v1 import ws_pb2

FIXTURES = Path(__file__).resolve().parents[3] / "proto" / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
SENT = [f for f in MANIFEST["fixtures"] if f["direction"] == "server" and not f["unknown_fields"]]
CLIENT = [f for f in MANIFEST["fixtures"] if f["direction"] == "client"]


def _load(entry: dict[str, Any]) -> tuple[bytes, bytes]:
    return (FIXTURES / entry["bin"]).read_bytes(), (FIXTURES / entry["json"]).read_bytes()


@pytest.mark.parametrize("entry", SENT, ids=[f["name"] for f in SENT])
def test_gateway_encodes_golden_bytes(entry: dict[str, Any]) -> None:
    binary, text = _load(entry)
    message = json_format.Parse(text.decode(), ws_pb2.ServerMessage())
    assert ProtoCodec().encode(message) == binary
    assert JsonCodec().encode(message).encode() == text
    body = message.WhichOneof("body")
    if body in ("frame", "frames"):
        frames = [message.frame] if body == "frame" else list(message.frames.frames)
        wire = [WireFrame.decode(f.SerializeToString()) for f in frames]
        assert ProtoCodec().encode_frames(wire) == binary
        assert JsonCodec().encode_frames(wire).encode() == text
        assert ProtoCodec().wire_frames(wire) == ws_message(binary, binary=True)
        assert JsonCodec().wire_frames(wire) == ws_message(text, binary=False)


@pytest.mark.parametrize("entry", CLIENT, ids=[f["name"] for f in CLIENT])
def test_gateway_decodes_client_fixture(entry: dict[str, Any]) -> None:
    binary, text = _load(entry)
    canonical = entry.get("canonical", json.loads(text))
    assert json_format.MessageToDict(ProtoCodec().decode(binary)) == canonical
    assert json_format.MessageToDict(JsonCodec().decode(text.decode())) == canonical
