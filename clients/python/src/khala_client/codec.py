"""Encoding of `openagents.sync.v1` messages on the two subprotocols.

`khala.v1+proto`: one serialized message per binary WebSocket message.
`khala.v1+json`: proto3 canonical JSON, compact, one per text message; unknown
fields from a newer server are ignored on both. proto/fixtures/ holds the
golden forms these functions are tested against.
"""

from __future__ import annotations

import json

from google.protobuf import json_format

from openagents.sync.v1 import ws_pb2

PROTO = "khala.v1+proto"
JSON = "khala.v1+json"


def encode_client_message(message: ws_pb2.ClientMessage, protocol: str) -> bytes | str:
    """The WebSocket payload of a ClientMessage: bytes on PROTO, text on JSON."""
    if protocol == JSON:
        return json.dumps(
            json_format.MessageToDict(message), separators=(",", ":"), ensure_ascii=False
        )
    return message.SerializeToString()


def decode_server_message(data: bytes | str) -> ws_pb2.ServerMessage:
    """A ServerMessage from a binary (proto) or text (JSON) WebSocket message."""
    if isinstance(data, str):
        return json_format.Parse(data, ws_pb2.ServerMessage(), ignore_unknown_fields=True)
    return ws_pb2.ServerMessage.FromString(data)
