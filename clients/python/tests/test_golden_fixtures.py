"""The Python SDK decodes every golden message of proto/fixtures/ identically.

Server messages: both forms decode to the fixture's canonical object (unknown
fields ignored). Client messages: the SDK's encoder produces exactly the golden
bytes and text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from khala_client.codec import JSON, PROTO, decode_server_message, encode_client_message
from openagents.sync.v1 import ws_pb2

FIXTURES = Path(__file__).resolve().parents[3] / "proto" / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
SERVER = [f for f in MANIFEST["fixtures"] if f["direction"] == "server"]
CLIENT = [f for f in MANIFEST["fixtures"] if f["direction"] == "client"]


def _forms(entry: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
    binary = (FIXTURES / entry["bin"]).read_bytes()
    text = (FIXTURES / entry["json"]).read_text(encoding="utf-8")
    return binary, text, entry.get("canonical", json.loads(text))


def test_manifest_covers_every_message_body() -> None:
    server_bodies = {f.name for f in ws_pb2.ServerMessage.DESCRIPTOR.oneofs_by_name["body"].fields}
    client_bodies = {f.name for f in ws_pb2.ClientMessage.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert server_bodies <= {f["body"] for f in SERVER}
    assert client_bodies <= {f["body"] for f in CLIENT}


@pytest.mark.parametrize("entry", SERVER, ids=[f["name"] for f in SERVER])
def test_sdk_decodes_server_fixture(entry: dict[str, Any]) -> None:
    binary, text, canonical = _forms(entry)
    from_bin = decode_server_message(binary)
    from_json = decode_server_message(text)
    assert json_format.MessageToDict(from_bin) == canonical
    assert json_format.MessageToDict(from_json) == canonical
    from_bin.DiscardUnknownFields()
    assert from_bin == from_json


@pytest.mark.parametrize("entry", CLIENT, ids=[f["name"] for f in CLIENT])
def test_sdk_encodes_client_fixture(entry: dict[str, Any]) -> None:
    binary, text, canonical = _forms(entry)
    message = json_format.ParseDict(canonical, ws_pb2.ClientMessage())
    if not entry["unknown_fields"]:
        assert encode_client_message(message, PROTO) == binary
        assert encode_client_message(message, JSON) == text


def test_seq_beyond_2p53_is_exact() -> None:
    entry = next(f for f in SERVER if f["name"] == "frame_seq_2p53_plus_1")
    binary, text, _ = _forms(entry)
    assert decode_server_message(binary).frame.seq == 2**53 + 1
    assert decode_server_message(text).frame.seq == 2**53 + 1


def test_max_size_fixture_is_max_frame_bytes() -> None:
    entry = next(f for f in SERVER if f["name"] == "frame_max_size")
    assert entry["json_bytes"] == MANIFEST["max_frame_bytes"]
