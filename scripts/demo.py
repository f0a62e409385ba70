"""`make demo`: watch live frames arrive for a new run.

Uses a running `make run` stack on the default ports, or starts one for the
duration of the demo. Signs in through the dev identity provider, creates an
org and a run, subscribes over WebSocket, appends events, and prints each frame
as the gateway delivers it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import aiohttp
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    ROOT,
    Stack,
    ensure_database,
    ensure_servers,
    reachable,
)

from khala_client import KhalaApi, connect
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2


def describe(frame) -> str:  # type: ignore[no-untyped-def]
    if frame.schema_version.startswith("openagents.runtime.v1.RuntimeEvent"):
        event = events_pb2.RuntimeEvent.FromString(frame.payload_bytes)
        return f"{event.type:<14} {event.payload_json.decode()}"
    doc = summaries_pb2.RunSummary.FromString(frame.payload_bytes)
    status = summaries_pb2.RunStatus.Name(doc.status).removeprefix("RUN_STATUS_").lower()
    return (
        f"RunSummary     status={status} events={doc.event_count} last_output={doc.last_output!r}"
    )


async def demo(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        tag = uuid.uuid4().hex[:6]
        await api.sign_in_dev(f"demo-{tag}@example.com", "Demo", device_id=f"demo-{tag}")
        org = f"demo-{tag}"
        await api.create_org(org, "Demo org")
        run = await api.create_run(org, f"run-{tag}", title="demo run")
        run_id = run["run_id"]
        topics = [f"org.{org}.runs", f"org.{org}.run.{run_id}"]
        token = (await api.sync_token(topics))["token"]
        conn = await connect(http, stack.ws_url, token)
        await conn.subscribe(topics)
        print(f"subscribed to {topics} at {stack.ws_url}\n")

        async def write() -> None:
            await api.append_events(
                run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "start"}]
            )
            for i in range(1, 9):
                await asyncio.sleep(0.3)
                await api.append_events(
                    run_id,
                    [
                        {
                            "type": "run.output",
                            "payload": {"text": f"step {i}"},
                            "idempotency_key": f"o{i}",
                        }
                    ],
                )
            await api.append_events(
                run_id, [{"type": "run.completed", "payload": {}, "idempotency_key": "done"}]
            )

        writer = asyncio.create_task(write())
        expected_run_frames = 11  # created, started, 8 outputs, completed
        seen = 0
        async for message in conn.messages(timeout_s=15):
            kind = message.WhichOneof("body")
            if kind == "frame":
                frame = message.frame
                print(f"{frame.topic:<40} seq={frame.seq:<3} {describe(frame)}")
                if frame.topic == topics[1]:
                    seen += 1
                    if seen == expected_run_frames:
                        break
            elif kind in ("snapshot_begin", "snapshot_end", "watermark", "subscribed"):
                print(f"{kind}: {json_format.MessageToJson(getattr(message, kind), indent=None)}")
        await writer
        await conn.close()
        print(f"\n{seen} live frames for run {run_id}, in order.")


def main() -> None:
    if reachable("http://127.0.0.1:8081", 8081):
        asyncio.run(demo(Stack(DEFAULT_DATABASE_URL, DEFAULT_AMQP_URL, ROOT / ".khala" / "logs")))
        return
    database_url = os.environ.get("KHALA_DATABASE_URL", DEFAULT_DATABASE_URL)
    amqp_url = os.environ.get("KHALA_AMQP_URL", DEFAULT_AMQP_URL)
    ensure_servers(database_url, amqp_url)
    ensure_database(database_url)
    stack = Stack(database_url=database_url, amqp_url=amqp_url, log_dir=ROOT / ".khala" / "logs")
    print("starting the Khala services for the demo…")
    try:
        stack.start_all()
        asyncio.run(demo(stack))
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
