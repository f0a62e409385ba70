"""Write proto/fixtures/: golden WebSocket messages every Khala client must decode alike.

For each message the manifest (`proto/fixtures/manifest.json`) names a binary
form (`.bin`, one serialized ClientMessage / ServerMessage as sent on
`khala.v1+proto`) and a JSON form (`.json`, the exact text of the
`khala.v1+json` message: proto3 canonical JSON, compact, UTF-8). A correct
decoder gets the same message from either form: the `.json` object itself,
except for the `unknown_fields` cases, whose forms carry a field 99 /
`futureField` that decoders must ignore; their entry gives `canonical`, the
object without it.

Tests: the gateway's encoder produces exactly these bytes; the Python SDK
(clients/python) and the TypeScript SDK (clients/ts) decode every form to
that object. `make proto-check` runs this with `--check`.

    uv run --no-sync python scripts/gen_fixtures.py          # write
    uv run --no-sync python scripts/gen_fixtures.py --check  # fail if stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2, ws_pb2

OUT = Path(__file__).resolve().parents[1] / "proto" / "fixtures"
# The gateway's default max_frame_bytes (KHALA_GATEWAY_MAX_FRAME_BYTES).
MAX_FRAME_BYTES = 1024 * 1024
EPOCH = "1733390000000123456"
TOPIC_RUN = "org.acme.run.run_01"
TOPIC_RUNS = "org.acme.runs"
# Field 99 is unused in every message: what a newer server might add.
UNKNOWN_FIELD_BIN = b"\x9a\x06\x05hello"  # tag (99 << 3 | 2), len 5, "hello"
UNKNOWN_FIELD_JSON = {"futureField": "hello"}


@dataclass(frozen=True)
class Fixture:
    """One golden message."""

    name: str
    direction: str  # "server" or "client"
    description: str
    message: Message
    unknown_fields: bool = False


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _event_payload(seq: int) -> bytes:
    return events_pb2.RuntimeEvent(
        event_id=f"evt_{seq:04d}",
        stream_id="run:run_01",
        org_id="acme",
        stream_kind=events_pb2.STREAM_KIND_RUN,
        subject_id="run_01",
        stream_seq=seq,
        type="run.output",
        payload_json=b'{"text":"hello \xc3\xa9"}',
        occurred_at_ms=1733390000000 + seq % 1000,
    ).SerializeToString()


def _event_frame(seq: int, **overrides: Any) -> frames_pb2.KhalaFrame:
    fields: dict[str, Any] = {
        "topic": TOPIC_RUN,
        "seq": seq,
        "kind": frames_pb2.FRAME_KIND_EVENT,
        "key": f"evt_{seq:04d}",
        "payload_bytes": _event_payload(seq),
        "schema_version": "openagents.runtime.v1.RuntimeEvent@1",
        "epoch": EPOCH,
        "published_at_ms": 1733390000100 + seq % 1000,
    }
    fields.update(overrides)
    return frames_pb2.KhalaFrame(**fields)


def _server(**body: Any) -> ws_pb2.ServerMessage:
    return ws_pb2.ServerMessage(**body)


def _client(**body: Any) -> ws_pb2.ClientMessage:
    return ws_pb2.ClientMessage(**body)


def _max_size_frame() -> ws_pb2.ServerMessage:
    """A `frame` whose JSON form is exactly MAX_FRAME_BYTES (its largest encoding)."""
    frame = _event_frame(7, payload_bytes=b"", key="k")
    base = len(_dumps(json_format.MessageToDict(_server(frame=frame))))
    overhead = len(',"payloadBytes":""')
    size = (MAX_FRAME_BYTES - base - overhead) // 4 * 3
    frame.payload_bytes = bytes(i % 251 for i in range(size))
    json_size = len(_dumps(json_format.MessageToDict(_server(frame=frame))))
    frame.key = "k" * (1 + MAX_FRAME_BYTES - json_size)
    return _server(frame=frame)


def fixtures() -> list[Fixture]:
    """Every golden message, one or more per ServerMessage / ClientMessage body."""
    summary = summaries_pb2.RunSummary(
        run_id="run_01",
        org_id="acme",
        title="Build",
        status=summaries_pb2.RUN_STATUS_RUNNING,
        last_seq=3,
        event_count=3,
        created_at_ms=1733390000001,
        updated_at_ms=1733390000003,
    )
    doc = frames_pb2.KhalaFrame(
        topic=TOPIC_RUNS,
        seq=12,
        kind=frames_pb2.FRAME_KIND_DOC_UPSERT,
        key="run_01",
        payload_bytes=summary.SerializeToString(),
        schema_version="openagents.codex.v1.RunSummary@1",
        epoch=EPOCH,
        published_at_ms=1733390000200,
    )
    S, C = "server", "client"
    return [
        Fixture(
            "welcome",
            S,
            "Welcome with every field set",
            _server(
                welcome=ws_pb2.Welcome(
                    connection_id="c_0123456789abcdef",
                    server_version="0.1.0",
                    heartbeat_interval_ms=15000,
                    max_frame_bytes=MAX_FRAME_BYTES,
                    token_expires_at_ms=1733390300000,
                )
            ),
        ),
        Fixture(
            "welcome_unknown_field",
            S,
            "Welcome from a newer server: an unknown field (99) in Welcome, to be ignored",
            _server(
                welcome=ws_pb2.Welcome(
                    connection_id="c_1",
                    server_version="9.0.0",
                    heartbeat_interval_ms=15000,
                    max_frame_bytes=MAX_FRAME_BYTES,
                )
            ),
            unknown_fields=True,
        ),
        Fixture(
            "subscribed",
            S,
            "Subscribed with head and oldest seq",
            _server(
                subscribed=ws_pb2.Subscribed(
                    request_id="sub-1", topic=TOPIC_RUN, epoch=EPOCH, head_seq=42, oldest_seq=1
                )
            ),
        ),
        Fixture(
            "subscribed_empty_topic",
            S,
            "Subscribed to a topic with no frames yet (head_seq 0 is omitted in JSON)",
            _server(
                subscribed=ws_pb2.Subscribed(
                    request_id="sub-2", topic="org.acme.workers", epoch=EPOCH
                )
            ),
        ),
        Fixture(
            "frame_event",
            S,
            "One EVENT frame carrying a RuntimeEvent",
            _server(frame=_event_frame(1)),
        ),
        Fixture(
            "frame_doc_upsert", S, "One DOC_UPSERT frame carrying a RunSummary", _server(frame=doc)
        ),
        Fixture(
            "frame_doc_delete",
            S,
            "One DOC_DELETE frame: empty payload (omitted in JSON)",
            _server(
                frame=frames_pb2.KhalaFrame(
                    topic=TOPIC_RUNS,
                    seq=13,
                    kind=frames_pb2.FRAME_KIND_DOC_DELETE,
                    key="run_01",
                    schema_version="openagents.codex.v1.RunSummary@1",
                    epoch=EPOCH,
                    published_at_ms=1733390000300,
                )
            ),
        ),
        Fixture(
            "frame_empty_payload",
            S,
            "An EVENT frame with an empty payload",
            _server(frame=_event_frame(2, payload_bytes=b"")),
        ),
        Fixture(
            "frame_seq_2p53_minus_1",
            S,
            "seq 2^53-1: the largest integer a JS number holds exactly",
            _server(frame=_event_frame(2**53 - 1)),
        ),
        Fixture(
            "frame_seq_2p53_plus_1",
            S,
            "seq 2^53+1: a JS number would round it to 2^53; decode as 64-bit",
            _server(frame=_event_frame(2**53 + 1)),
        ),
        Fixture(
            "frame_seq_max_uint64",
            S,
            "seq 2^64-1 (the largest uint64)",
            _server(frame=_event_frame(2**64 - 1)),
        ),
        Fixture(
            "frame_max_size",
            S,
            "A frame whose JSON form is exactly max_frame_bytes (1,048,576 bytes), "
            "the largest message the gateway sends",
            _max_size_frame(),
        ),
        Fixture(
            "frames_batch",
            S,
            "A FrameBatch of three consecutive EVENT frames",
            _server(frames=frames_pb2.FrameBatch(frames=[_event_frame(s) for s in (3, 4, 5)])),
        ),
        Fixture(
            "frames_batch_across_2p53",
            S,
            "A FrameBatch whose seqs cross 2^53",
            _server(
                frames=frames_pb2.FrameBatch(
                    frames=[_event_frame(s) for s in (2**53 - 1, 2**53, 2**53 + 1)]
                )
            ),
        ),
        Fixture(
            "snapshot_begin",
            S,
            "Start of a snapshot",
            _server(
                snapshot_begin=ws_pb2.SnapshotBegin(topic=TOPIC_RUNS, epoch=EPOCH, as_of_seq=12)
            ),
        ),
        Fixture(
            "snapshot_end",
            S,
            "End of a snapshot",
            _server(snapshot_end=ws_pb2.SnapshotEnd(topic=TOPIC_RUNS, as_of_seq=12)),
        ),
        Fixture(
            "watermark_live",
            S,
            "Replay caught up; live",
            _server(watermark=ws_pb2.Watermark(topic=TOPIC_RUN, seq=42, live=True)),
        ),
        Fixture(
            "heartbeat",
            S,
            "Heartbeat",
            _server(heartbeat=ws_pb2.Heartbeat(server_time_ms=1733390000500)),
        ),
        Fixture("pong", S, "Pong", _server(pong=ws_pb2.Pong(nonce="n-1"))),
        Fixture(
            "error_stale_cursor",
            S,
            "stale_cursor(retention) with oldest and head seq",
            _server(
                error=ws_pb2.Error(
                    code="stale_cursor",
                    message="cursor 3 is older than retention",
                    topic=TOPIC_RUN,
                    request_id="sub-1",
                    oldest_seq=10,
                    head_seq=42,
                    reason="retention",
                )
            ),
        ),
        Fixture(
            "error_rate_limited",
            S,
            "rate_limited with retry_after_ms",
            _server(
                error=ws_pb2.Error(
                    code="rate_limited", message="too many messages", retry_after_ms=1000
                )
            ),
        ),
        Fixture(
            "error_unknown_code",
            S,
            "An error code this client does not know (treat as internal)",
            _server(error=ws_pb2.Error(code="some_future_code", message="from a newer server")),
        ),
        Fixture(
            "reconnect",
            S,
            "Reconnect (drain)",
            _server(reconnect=ws_pb2.Reconnect(reason="drain", retry_after_ms=2500)),
        ),
        Fixture(
            "empty_body",
            S,
            "A ServerMessage with no body set (an unknown oneof member from a "
            "newer server looks like this): ignore it",
            _server(),
        ),
        Fixture(
            "hello",
            C,
            "Hello",
            _client(
                hello=ws_pb2.Hello(
                    token="eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
                    client_name="khala-ts",
                    client_version="1.0.0",
                )
            ),
        ),
        Fixture(
            "subscribe",
            C,
            "Subscribe with a fresh and a resumed cursor",
            _client(
                subscribe=ws_pb2.Subscribe(
                    request_id="sub-1",
                    snapshot_if_stale=True,
                    cursors=[
                        ws_pb2.TopicCursor(topic=TOPIC_RUNS),
                        ws_pb2.TopicCursor(topic=TOPIC_RUN, epoch=EPOCH, after_seq=41),
                    ],
                )
            ),
        ),
        Fixture(
            "subscribe_seq_beyond_2p53",
            C,
            "Subscribe resuming after seq 2^53+1",
            _client(
                subscribe=ws_pb2.Subscribe(
                    request_id="sub-9",
                    cursors=[ws_pb2.TopicCursor(topic=TOPIC_RUN, epoch=EPOCH, after_seq=2**53 + 1)],
                )
            ),
        ),
        Fixture(
            "subscribe_unknown_field",
            C,
            "Subscribe from a newer client: an unknown field (99) the gateway ignores",
            _client(
                subscribe=ws_pb2.Subscribe(
                    request_id="sub-3", cursors=[ws_pb2.TopicCursor(topic=TOPIC_RUNS)]
                )
            ),
            unknown_fields=True,
        ),
        Fixture(
            "unsubscribe",
            C,
            "Unsubscribe",
            _client(unsubscribe=ws_pb2.Unsubscribe(request_id="unsub-1", topics=[TOPIC_RUN])),
        ),
        Fixture(
            "refresh_auth",
            C,
            "RefreshAuth",
            _client(refresh_auth=ws_pb2.RefreshAuth(token="eyJhbGciOiJFUzI1NiJ9.e30.bmV3")),
        ),
        Fixture("ping", C, "Ping", _client(ping=ws_pb2.Ping(nonce="n-1"))),
    ]


def render(fixture: Fixture) -> tuple[bytes, bytes, dict[str, Any]]:
    """(binary form, JSON form, canonical JSON object) of a fixture."""
    canonical = json_format.MessageToDict(fixture.message)
    if not fixture.unknown_fields:
        return fixture.message.SerializeToString(), _dumps(canonical).encode(), canonical
    body_name = fixture.message.WhichOneof("body")
    assert body_name is not None
    body = getattr(fixture.message, body_name)
    inner = body.SerializeToString() + UNKNOWN_FIELD_BIN
    number = fixture.message.DESCRIPTOR.fields_by_name[body_name].number
    binary = bytes([number << 3 | 2]) + _varint(len(inner)) + inner
    json_key = fixture.message.DESCRIPTOR.fields_by_name[body_name].json_name
    with_unknown = dict(canonical)
    with_unknown[json_key] = {**canonical[json_key], **UNKNOWN_FIELD_JSON}
    with_unknown.update(UNKNOWN_FIELD_JSON)
    return binary, _dumps(with_unknown).encode(), canonical


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def build() -> dict[str, bytes]:
    """Every file of proto/fixtures/ (relative path -> content)."""
    files: dict[str, bytes] = {}
    entries = []
    for fixture in fixtures():
        binary, text, canonical = render(fixture)
        base = f"{fixture.direction}/{fixture.name}"
        files[f"{base}.bin"] = binary
        files[f"{base}.json"] = text
        entry: dict[str, Any] = {
            "name": fixture.name,
            "direction": fixture.direction,
            "type": "openagents.sync.v1."
            + ("ServerMessage" if fixture.direction == "server" else "ClientMessage"),
            "body": fixture.message.WhichOneof("body") or "",
            "description": fixture.description,
            "bin": f"{base}.bin",
            "json": f"{base}.json",
            "bin_bytes": len(binary),
            "json_bytes": len(text),
            "bin_sha256": hashlib.sha256(binary).hexdigest(),
            "json_sha256": hashlib.sha256(text).hexdigest(),
            "unknown_fields": fixture.unknown_fields,
        }
        if fixture.unknown_fields:
            # What a decoder must produce from either form; otherwise that is the .json itself.
            entry["canonical"] = canonical
        entries.append(entry)
    manifest = {
        "protocol": "openagents.sync.v1",
        "max_frame_bytes": MAX_FRAME_BYTES,
        "generator": "scripts/gen_fixtures.py",
        "fixtures": entries,
    }
    files["manifest.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    return files


def main() -> int:
    """Write (or with --check, verify) proto/fixtures/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if proto/fixtures/ is stale")
    args = parser.parse_args()
    files = build()
    existing = (
        {
            str(p.relative_to(OUT)): p.read_bytes()
            for p in OUT.rglob("*")
            if p.is_file() and p.suffix in {".bin", ".json"}
        }
        if OUT.exists()
        else {}
    )
    if args.check:
        if existing != files:
            stale = sorted(
                set(existing) ^ set(files) | {k for k in files if existing.get(k) != files[k]}
            )
            print(
                f"proto/fixtures is stale ({', '.join(stale[:5])}): run scripts/gen_fixtures.py",
                file=sys.stderr,
            )
            return 1
        return 0
    for path in set(existing) - set(files):
        (OUT / path).unlink()
    for path, content in files.items():
        (OUT / path).parent.mkdir(parents=True, exist_ok=True)
        (OUT / path).write_bytes(content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
