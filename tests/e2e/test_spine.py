"""Write -> project -> deliver through the four real services.

A signed-in user appends 500 events to a run over runtime's HTTP API; WebSocket
clients of the gateway must see every frame of the run's topic exactly once,
in order: live, across a disconnect/resume with a cursor, and as a late
replay. Forged tokens are refused with `unauthorized` and close 4001.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import aiohttp
import pytest

from khala_client import JSON, PROTO, KhalaApi, connect
from khala_common.topics import run_topic, runs_topic
from openagents.codex.v1 import summaries_pb2
from openagents.sync.v1 import ws_pb2

from .support import Received, assert_exact_sequence, read_until

pytestmark = pytest.mark.e2e

EVENTS = 500


def _batch(start: int, size: int) -> list[dict[str, object]]:
    return [
        {"type": "run.output", "payload": {"text": f"line {i}"}, "idempotency_key": f"k-{i}"}
        for i in range(start, start + size)
    ]


async def _append_all(api: KhalaApi, run_id: str, total: int, batch: int = 10) -> None:
    await api.append_events(
        run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "start"}]
    )
    sent = 1
    while sent < total:
        size = min(batch, total - sent)
        receipt = await api.append_events(run_id, _batch(sent, size))
        assert receipt["last_seq"] == sent + size + 1  # seq 1 is run.created
        sent += size


async def test_live_resume_and_late_replay(
    api: KhalaApi, org_id: str, stack, http: aiohttp.ClientSession
) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id, title="e2e run")
    topic = run_topic(org_id, run_id)
    head = EVENTS + 1  # run.created + 500 appended
    token = (await api.sync_token([topic, runs_topic(org_id)]))["token"]

    live = await connect(http, stack.ws_url, token, protocol=PROTO)
    await live.subscribe([topic])
    dropper = await connect(http, stack.ws_url, token, protocol=JSON)
    await dropper.subscribe([topic])

    writer = asyncio.create_task(_append_all(api, run_id, EVENTS))
    live_seen = Received()
    first_part = await read_until(dropper, topic, 200, Received())
    await dropper.close()
    assert_exact_sequence(first_part.seqs, 1, 200)

    # Resume with the cursor while appends are still flowing.
    resumed = await connect(http, stack.ws_url, token, protocol=JSON)
    resumed.cursors[topic] = (first_part.frames[-1].epoch, 200)
    await resumed.subscribe([topic])
    rest, _ = await asyncio.gather(
        read_until(resumed, topic, head, Received()), read_until(live, topic, head, live_seen)
    )
    await writer

    assert_exact_sequence(live_seen.seqs, 1, head)
    assert_exact_sequence(rest.seqs, 201, head)
    events = live_seen.events()
    assert [e.stream_seq for e in events] == list(range(1, head + 1))
    assert events[0].type == "run.created" and events[1].type == "run.started"
    assert json.loads(events[-1].payload_json) == {"text": f"line {EVENTS - 1}"}
    # what the clients saw is exactly runtime's log
    log = await api.read_events(run_id, after_seq=0, limit=1000)
    assert [e["event_id"] for e in log["events"]] == [e.event_id for e in events]

    # A late subscriber replays everything, then is told it is live.
    late = await connect(http, stack.ws_url, token)
    await late.subscribe([topic, runs_topic(org_id)])
    replay = await read_until(late, topic, head, Received())
    assert_exact_sequence(replay.seqs, 1, head)
    assert replay.frames == live_seen.frames

    # The runs topic starts with a snapshot whose document reflects every event.
    snapshot_docs: list[summaries_pb2.RunSummary] = []

    async def read_snapshot() -> None:
        async for message in late.messages():
            kind = message.WhichOneof("body")
            if kind == "frame" and message.frame.topic == runs_topic(org_id):
                snapshot_docs.append(
                    summaries_pb2.RunSummary.FromString(message.frame.payload_bytes)
                )
            if kind == "snapshot_end" and message.snapshot_end.topic == runs_topic(org_id):
                return

    await asyncio.wait_for(read_snapshot(), 30)
    mine = [d for d in snapshot_docs if d.run_id == run_id]
    assert len(mine) == 1
    assert mine[0].last_seq == head and mine[0].event_count == head
    assert mine[0].status == summaries_pb2.RUN_STATUS_RUNNING
    assert mine[0].output_count == EVENTS - 1
    for conn in (live, resumed, late):
        await conn.close()


def _forge_alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    header = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        .rstrip(b"=")
        .decode()
    )
    return f"{header}.{payload}."


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = ["org.*.runs", "org.*.run.*"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("forge", [_forge_alg_none, _tamper], ids=["alg-none", "tampered"])
async def test_forged_tokens_are_refused(
    api: KhalaApi, org_id: str, stack, http: aiohttp.ClientSession, forge
) -> None:
    token = (await api.sync_token([runs_topic(org_id)]))["token"]
    ws = await http.ws_connect(stack.ws_url, protocols=(PROTO,))
    hello = ws_pb2.ClientMessage(
        hello=ws_pb2.Hello(token=forge(token), client_name="e2e", client_version="1.0.0")
    )
    await ws.send_bytes(hello.SerializeToString())
    reply = await ws.receive(timeout=10)
    assert reply.type == aiohttp.WSMsgType.BINARY
    error = ws_pb2.ServerMessage.FromString(reply.data)
    assert error.WhichOneof("body") == "error"
    assert error.error.code == "unauthorized"
    closing = await ws.receive(timeout=10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4001
