"""Human-readable output of the CLI: tables and one line per applied frame."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from khala_client.payloads import event_payload
from khala_client.updates import FrameApplied
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table of `columns` (missing values blank)."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        if "state" in value:  # projection status
            lag = value.get("lag_events")
            return str(value["state"]) + (f" ({lag})" if lag else "")
        return json.dumps(value, sort_keys=True)
    return str(value)


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def frame_line(update: FrameApplied) -> str:
    """One line for a frame: time, topic, seq and a summary of the payload."""
    stamp = time.strftime(
        "%H:%M:%S", time.localtime(update.frame.published_at_ms / 1000 or time.time())
    )
    head = f"{stamp} {update.topic} #{update.seq}"
    if update.in_snapshot:
        head += " (snapshot)"
    payload = update.payload
    if update.deleted:
        return f"{head} delete {update.key}"
    if isinstance(payload, events_pb2.RuntimeEvent):
        data = event_payload(payload)
        text = data.get("text") if isinstance(data.get("text"), str) else None
        detail = text if text is not None else (json.dumps(data, sort_keys=True) if data else "")
        return f"{head} {payload.type} {detail}".rstrip()
    if isinstance(payload, summaries_pb2.RunSummary):
        status = _enum(summaries_pb2.RunStatus.Name(payload.status), "RUN_STATUS_")
        return f"{head} run {payload.run_id} {status} seq={payload.last_seq} events={payload.event_count} {payload.title!r}"
    if isinstance(payload, summaries_pb2.CodexWorkerSummary):
        status = _enum(summaries_pb2.WorkerStatus.Name(payload.status), "WORKER_STATUS_")
        beat = _enum(summaries_pb2.HeartbeatState.Name(payload.heartbeat_state), "HEARTBEAT_STATE_")
        return f"{head} worker {payload.worker_id} {status} heartbeat={beat} seq={payload.last_seq}"
    return f"{head} {update.frame.schema_version} key={update.key}"


def frame_json(update: FrameApplied) -> str:
    """One JSON object per frame (for scripts)."""
    payload: Any = None
    if isinstance(update.payload, Message):
        payload = json_format.MessageToDict(update.payload, preserving_proto_field_name=True)
        if isinstance(update.payload, events_pb2.RuntimeEvent):
            payload["payload"] = event_payload(update.payload)
            payload.pop("payload_json", None)
    return json.dumps(
        {
            "topic": update.topic,
            "seq": update.seq,
            "epoch": update.frame.epoch,
            "kind": frames_pb2.FrameKind.Name(update.frame.kind),
            "key": update.key,
            "schema_version": update.frame.schema_version,
            "snapshot": update.in_snapshot,
            "payload": payload,
        },
        sort_keys=True,
    )
