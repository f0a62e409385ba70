"""Integration: RuntimeService over real gRPC."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from grpc import aio

from khala_runtime.domain.chain import verify_chain
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2, runtime_service_pb2_grpc
from openagents.runtime.v1 import runtime_service_pb2 as pb

pytestmark = pytest.mark.integration


async def seeded_run(api: Any, identity: Any, unique: str, outputs: int) -> str:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await api.call("POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id})
    events = [{"type": "run.started"}] + [
        {"type": "run.output", "payload": {"text": str(i)}} for i in range(outputs)
    ]
    for start in range(0, len(events), 500):
        status, _, _ = await api.call(
            "POST", f"/api/v1/runs/{run_id}/events", token, {"events": events[start : start + 500]}
        )
        assert status == 201
    return run_id


async def read(stub: Any, metadata: Any, stream_id: str, after: int, up_to: int) -> list[Any]:
    call = stub.ReadStream(
        pb.ReadStreamRequest(stream_id=stream_id, after_seq=after, up_to_seq=up_to),
        metadata=metadata,
    )
    return [response.event async for response in call]


async def test_read_stream_ranges(
    api: Any, identity: Any, unique: str, grpc_target: str, service_metadata: Any
) -> None:
    run_id = await seeded_run(api, identity, unique, outputs=1200)  # 1202 events
    stream_id = f"run:{run_id}"
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        events = await read(stub, service_metadata, stream_id, 2, 5)
        assert [e.stream_seq for e in events] == [3, 4, 5]
        everything = await read(stub, service_metadata, stream_id, 0, 0)
        assert [e.stream_seq for e in everything] == list(range(1, 1203))
        assert verify_chain(everything)
        assert everything[0].type == "run.created"
        assert everything[0].stream_kind == events_pb2.STREAM_KIND_RUN
        tail = await read(stub, service_metadata, stream_id, 1200, 0)
        assert [e.stream_seq for e in tail] == [1201, 1202]
        assert await read(stub, service_metadata, stream_id, 1202, 0) == []
        assert [
            e.stream_seq for e in await read(stub, service_metadata, stream_id, 1199, 5000)
        ] == [1200, 1201, 1202]

        for bad_stream, code in [
            ("run:missing", grpc.StatusCode.NOT_FOUND),
            ("nonsense", grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with pytest.raises(aio.AioRpcError) as info:
                await read(stub, service_metadata, bad_stream, 0, 0)
            assert info.value.code() == code
        with pytest.raises(aio.AioRpcError) as info:
            await read(stub, service_metadata, stream_id, 5, 2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_service_credential_required(
    api: Any, identity: Any, unique: str, grpc_target: str
) -> None:
    run_id = await seeded_run(api, identity, unique, outputs=1)
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong"),)]:
            with pytest.raises(aio.AioRpcError) as info:
                await read(stub, metadata, f"run:{run_id}", 0, 0)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(aio.AioRpcError) as info:
                await stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_get_run_and_append_events(
    api: Any, identity: Any, unique: str, grpc_target: str, service_metadata: Any
) -> None:
    run_id = await seeded_run(api, identity, unique, outputs=0)  # created, started: seq 2
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=service_metadata)).run
        assert (run.run_id, run.org_id, run.last_seq) == (run_id, f"org{unique}", 2)
        assert run.status == summaries_pb2.RUN_STATUS_RUNNING

        request = pb.AppendEventsRequest(
            run_id=run_id,
            expected_seq=2,
            events=[
                events_pb2.EventInput(
                    type="run.output", payload_json=b'{"text":"via grpc"}', idempotency_key="g1"
                ),
                events_pb2.EventInput(type="run.completed"),
            ],
        )
        receipt = (await stub.AppendEvents(request, metadata=service_metadata)).receipt
        assert (receipt.first_seq, receipt.last_seq) == (3, 4)
        replay = (await stub.AppendEvents(request, metadata=service_metadata)).receipt
        assert replay == receipt

        cases = [
            (
                pb.AppendEventsRequest(
                    run_id=run_id, expected_seq=2, events=[events_pb2.EventInput(type="run.output")]
                ),
                grpc.StatusCode.ABORTED,
                "seq_conflict",
            ),
            (
                pb.AppendEventsRequest(
                    run_id=run_id, events=[events_pb2.EventInput(type="run.output")]
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
                "terminal_state",
            ),
            (
                pb.AppendEventsRequest(
                    run_id=run_id, events=[events_pb2.EventInput(type="run.nope")]
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "unknown_event_type",
            ),
            (
                pb.AppendEventsRequest(
                    run_id=run_id,
                    events=[events_pb2.EventInput(type="run.output", payload_json=b"[1]")],
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "validation_error",
            ),
            (
                pb.AppendEventsRequest(
                    run_id="ghost", events=[events_pb2.EventInput(type="run.output")]
                ),
                grpc.StatusCode.NOT_FOUND,
                "run_not_found",
            ),
        ]
        for bad, code, error_code in cases:
            with pytest.raises(aio.AioRpcError) as info:
                await stub.AppendEvents(bad, metadata=service_metadata)
            assert info.value.code() == code, error_code
            assert ("khala-error-code", error_code) in tuple(info.value.trailing_metadata())

    token = identity.login({f"org{unique}": "viewer"})
    _, page, _ = await api.call("GET", f"/api/v1/runs/{run_id}/events?after_seq=2", token)
    assert [(e["type"], e["payload"]) for e in page["events"]] == [
        ("run.output", json.loads('{"text":"via grpc"}')),
        ("run.completed", {}),
    ]


async def test_verify_stream_reports_intact_and_broken_chains(
    api: Any, identity: Any, unique: str, grpc_target: str, service_metadata: Any, migrated: str
) -> None:
    import asyncpg

    run_id = await seeded_run(api, identity, unique, outputs=8)  # 10 events
    stream_id = f"run:{run_id}"
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        intact = await stub.VerifyStream(
            pb.VerifyStreamRequest(stream_id=stream_id), metadata=service_metadata
        )
        assert intact.ok and intact.head_seq == 10 and intact.events_checked == 10
        assert intact.broken_seq == 0 and intact.reason == ""

        conn = await asyncpg.connect(migrated)
        select = "SELECT payload_json FROM runtime.events WHERE stream_id = $1 AND stream_seq = 6"
        update = (
            "UPDATE runtime.events SET payload_json = $2 WHERE stream_id = $1 AND stream_seq = 6"
        )
        original = await conn.fetchval(select, stream_id)
        try:
            await conn.execute(update, stream_id, b'{"text":"forged"}')
            broken = await stub.VerifyStream(
                pb.VerifyStreamRequest(stream_id=stream_id), metadata=service_metadata
            )
        finally:
            # other tests verify every stream of the shared database
            await conn.execute(update, stream_id, original)
            await conn.close()
        assert not broken.ok
        assert (broken.broken_seq, broken.reason) == (6, "chain_mismatch")
        assert broken.expected != broken.actual

        for bad_stream, code in [
            ("run:ghost", grpc.StatusCode.NOT_FOUND),
            ("nonsense", grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with pytest.raises(aio.AioRpcError) as info:
                await stub.VerifyStream(
                    pb.VerifyStreamRequest(stream_id=bad_stream), metadata=service_metadata
                )
            assert info.value.code() == code
