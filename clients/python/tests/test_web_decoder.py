"""The browser decoder (clients/web/dashboard/lib/protowire.js) agrees with protobuf.

Payloads serialized by the Python protobuf runtime are decoded by the JS module
in node and compared with `MessageToDict`; the JS field tables must be exactly
what clients/web/tools/gen_schemas.py derives from the proto descriptors.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format

from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2

WEB = Path(__file__).resolve().parents[2] / "web"

SAMPLES = [
    (
        "openagents.codex.v1.RunSummary@1",
        summaries_pb2.RunSummary(
            run_id="run_ü",
            org_id="acme",
            title="Tïtle ✓",
            status=summaries_pb2.RUN_STATUS_SUCCEEDED,
            last_seq=2**40 + 3,
            event_count=12,
            output_count=9,
            last_event_type="run.completed",
            created_at_ms=1_767_225_601_200,
            updated_at_ms=1_767_225_699_999,
            last_output="x" * 300,
        ),
    ),
    (
        "openagents.codex.v1.CodexWorkerSummary@1",
        summaries_pb2.CodexWorkerSummary(
            worker_id="w1",
            org_id="acme",
            status=summaries_pb2.WORKER_STATUS_ERROR,
            heartbeat_count=5,
            last_heartbeat_at_ms=1_767_225_601_000,
            heartbeat_state=summaries_pb2.HEARTBEAT_STATE_STALE,
            last_error="boom",
        ),
    ),
    ("openagents.codex.v1.CodexWorkerSummary@1", summaries_pb2.CodexWorkerSummary()),
    (
        "openagents.runtime.v1.RuntimeEvent@1",
        events_pb2.RuntimeEvent(
            event_id="e-1",
            stream_id="run:r",
            org_id="acme",
            stream_kind=events_pb2.STREAM_KIND_RUN,
            subject_id="r",
            stream_seq=7,
            type="run.output",
            payload_json=b'{"text":"h\\u00e9llo"}',
            idempotency_key="k",
            occurred_at_ms=-5,
            chain_hash="ab" * 32,
        ),
    ),
]


def test_generated_schema_tables_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(WEB / "tools" / "gen_schemas.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_decoder_matches_python_protobuf() -> None:
    frames = [
        {
            "kind": "FRAME_KIND_EVENT",
            "schemaVersion": version,
            "b64": base64.b64encode(msg.SerializeToString()).decode(),
        }
        for version, msg in SAMPLES
    ]
    script = (
        "import { decodePayload, base64ToBytes } from './dashboard/lib/protowire.js';\n"
        "const frames = JSON.parse(process.argv[1]);\n"
        "const out = frames.map((f) => { const m = decodePayload({...f, topic: 't', payloadBytes: base64ToBytes(f.b64)});\n"
        "  for (const [k, v] of Object.entries(m)) if (v instanceof Uint8Array) m[k] = Buffer.from(v).toString('base64');\n"
        "  return m; });\n"
        "console.log(JSON.stringify(out));\n"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps(frames)],
        capture_output=True,
        text=True,
        cwd=WEB,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    for (_, message), got in zip(SAMPLES, decoded, strict=True):
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        for key, value in expected.items():
            if isinstance(value, str) and key.endswith(("Seq", "Ms", "Count")):
                expected[key] = int(
                    value
                )  # proto3 JSON writes 64-bit ints as strings; JS gives Numbers
        got.pop("payload", None)  # the parsed payload_json convenience
        assert got == expected
    assert decoded[3]["payloadJson"] and json.loads(
        base64.b64decode(decoded[3]["payloadJson"])
    ) == {"text": "héllo"}
