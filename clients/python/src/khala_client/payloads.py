"""Typed decoding of frame payloads by `schema_version` (protocol §4).

`schema_version` is `<full proto type name>@<version>`; the payload is decoded
by it, never by the topic. An unknown version raises `UnknownSchema`: the
caller must stop applying that topic (skipping would move the cursor past
data it never applied) and ask the user to update.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import DecodeError, Message

from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2

RUN_SUMMARY = "openagents.codex.v1.RunSummary@1"
WORKER_SUMMARY = "openagents.codex.v1.CodexWorkerSummary@1"
RUNTIME_EVENT = "openagents.runtime.v1.RuntimeEvent@1"

SCHEMAS: dict[str, type[Message]] = {
    RUN_SUMMARY: summaries_pb2.RunSummary,
    WORKER_SUMMARY: summaries_pb2.CodexWorkerSummary,
    RUNTIME_EVENT: events_pb2.RuntimeEvent,
}


class UnknownSchema(Exception):
    """A payload this client cannot decode: stop the topic and update the client."""

    def __init__(
        self, topic: str, schema_version: str, detail: str = "unknown schema_version"
    ) -> None:
        super().__init__(f"{topic}: {detail} {schema_version!r}; update khala-client")
        self.topic = topic
        self.schema_version = schema_version


def register_schema(schema_version: str, message_type: type[Message]) -> None:
    """Teach the decoder a payload type (e.g. a newer version)."""
    SCHEMAS[schema_version] = message_type


def decode_payload(frame: frames_pb2.KhalaFrame) -> Message | None:
    """The frame's payload as its proto type; None for DOC_DELETE (its payload is ignored)."""
    if frame.kind == frames_pb2.FRAME_KIND_DOC_DELETE:
        return None
    message_type = SCHEMAS.get(frame.schema_version)
    if message_type is None:
        raise UnknownSchema(frame.topic, frame.schema_version)
    try:
        return message_type.FromString(frame.payload_bytes)
    except DecodeError:
        raise UnknownSchema(frame.topic, frame.schema_version, "undecodable payload of") from None


def event_payload(event: events_pb2.RuntimeEvent) -> dict[str, Any]:
    """A RuntimeEvent's JSON payload as a dict (`{}` when empty)."""
    if not event.payload_json:
        return {}
    data = json.loads(event.payload_json)
    return data if isinstance(data, dict) else {"value": data}
