"""Per-service identity at runtime's real gRPC server: each method takes only the
services its callers table names (ReadStream/VerifyStream: the projector;
AppendEvents: an operator), an unknown token is refused, and a rotated token
works alongside the old one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from khala_common.grpc_server import ERROR_CODE_KEY, service_metadata
from khala_runtime.app import Started, start
from openagents.runtime.v1 import events_pb2, runtime_service_pb2_grpc
from openagents.runtime.v1 import runtime_service_pb2 as pb

pytestmark = pytest.mark.integration

CREDENTIALS = "projector:p-old,projector:p-new,gateway:g-tok,operator:o-tok"


@pytest.fixture(scope="module")
async def guarded(control: Any, settings_for: Any) -> AsyncIterator[Started]:
    """A runtime whose server knows its callers by name."""
    _, _, url, target = control
    started = await start(settings_for(url, target, KHALA_SERVICE_CREDENTIALS=CREDENTIALS))
    yield started
    await started.stop()


async def seeded_run(api: Any, identity: Any, unique: str) -> str:
    """A run with three events: created, started, one output."""
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await api.call("POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id})
    events = [{"type": "run.started"}, {"type": "run.output", "payload": {"text": "0"}}]
    status, _, _ = await api.call(
        "POST", f"/api/v1/runs/{run_id}/events", token, {"events": events}
    )
    assert status == 201
    return run_id


async def _refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    trailers = dict(refused.value.trailing_metadata() or ())
    return refused.value.code(), str(trailers.get(ERROR_CODE_KEY))


async def test_each_method_takes_only_its_callers(
    api: Any, identity: Any, unique: str, guarded: Started
) -> None:
    run_id = await seeded_run(api, identity, unique)
    stream = pb.ReadStreamRequest(stream_id=f"run:{run_id}")
    append = pb.AppendEventsRequest(
        run_id=run_id, events=[events_pb2.EventInput(type="run.output", payload_json=b"{}")]
    )
    verify = pb.VerifyStreamRequest(stream_id=f"run:{run_id}")
    forbidden = (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    async with aio.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)  # type: ignore[no-untyped-call]

        def read(token: str) -> Any:
            async def events() -> list[Any]:
                call = stub.ReadStream(stream, metadata=service_metadata(token))
                return [r.event async for r in call]

            return events()

        # the projector reads and verifies; the old and the new token during a rotation
        for token in ("p-old", "p-new"):
            assert [e.stream_seq for e in await read(token)] == [1, 2, 3]
        assert (await stub.VerifyStream(verify, metadata=service_metadata("p-new"))).ok
        # another service may not read the log, nor may the projector write it
        assert await _refused(read("g-tok")) == forbidden
        assert await _refused(stub.VerifyStream(verify, metadata=service_metadata("g-tok"))) == (
            forbidden
        )
        for token in ("p-new", "g-tok"):
            assert (
                await _refused(stub.AppendEvents(append, metadata=service_metadata(token)))
                == forbidden
            )
        receipt = (await stub.AppendEvents(append, metadata=service_metadata("o-tok"))).receipt
        assert receipt.first_seq == 4
        # an unlisted method is open to every known caller
        run = await stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=service_metadata("g-tok"))
        assert run.run.last_seq == 4
        # unknown tokens, the shared KHALA_SERVICE_TOKEN of single-token mode included
        for token in ("nobody", "runtime-test-service-token", ""):
            assert await _refused(
                stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=service_metadata(token))
            ) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "unauthorized",
            )
