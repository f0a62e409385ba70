"""Integration: RuntimeService GetWorker / ListWorkers / worker ReadStream over
real gRPC, and the deadline handling of unary methods."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc import aio

from khala_runtime.domain.chain import verify_chain
from khala_runtime.handlers.grpc_runtime import _within_deadline
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2, runtime_service_pb2_grpc
from openagents.runtime.v1 import runtime_service_pb2 as pb


async def seeded_worker(api: Any, identity: Any, org: str, wid: str) -> None:
    token = identity.login({org: "member"})
    status, _, _ = await api.call(
        "POST", "/api/v1/workers", token, {"org_id": org, "worker_id": wid}
    )
    assert status == 201
    status, _, _ = await api.call(
        "POST",
        f"/api/v1/workers/{wid}/events",
        token,
        {"events": [{"type": "worker.started"}, {"type": "worker.heartbeat"}]},
    )
    assert status == 201


@pytest.mark.integration
async def test_get_and_list_workers(
    api: Any, identity: Any, unique: str, grpc_target: str, service_metadata: Any
) -> None:
    org = f"org{unique}"
    await seeded_worker(api, identity, org, f"a{unique}")
    await seeded_worker(api, identity, org, f"b{unique}")
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        worker = (
            await stub.GetWorker(
                pb.GetWorkerRequest(worker_id=f"a{unique}"), metadata=service_metadata, timeout=10
            )
        ).worker
        assert (worker.worker_id, worker.org_id, worker.last_seq) == (f"a{unique}", org, 3)
        assert worker.status == summaries_pb2.WORKER_STATUS_RUNNING
        assert worker.last_heartbeat_at_ms > 0 and worker.created_at_ms > 0

        listed = (
            await stub.ListWorkers(
                pb.ListWorkersRequest(org_id=org), metadata=service_metadata, timeout=10
            )
        ).workers
        assert sorted(w.worker_id for w in listed) == [f"a{unique}", f"b{unique}"]
        empty = await stub.ListWorkers(
            pb.ListWorkersRequest(org_id=f"none{unique}"), metadata=service_metadata
        )
        assert list(empty.workers) == []

        events = [
            r.event
            async for r in stub.ReadStream(
                pb.ReadStreamRequest(stream_id=f"worker:a{unique}"), metadata=service_metadata
            )
        ]
        assert [e.type for e in events] == [
            "worker.registered",
            "worker.started",
            "worker.heartbeat",
        ]
        assert verify_chain(events)

        for call, code, error in [
            (
                stub.GetWorker(pb.GetWorkerRequest(worker_id="ghost"), metadata=service_metadata),
                grpc.StatusCode.NOT_FOUND,
                "worker_not_found",
            ),
            (
                stub.GetWorker(pb.GetWorkerRequest(worker_id="a/b"), metadata=service_metadata),
                grpc.StatusCode.INVALID_ARGUMENT,
                "validation_error",
            ),
            (
                stub.ListWorkers(pb.ListWorkersRequest(org_id=""), metadata=service_metadata),
                grpc.StatusCode.INVALID_ARGUMENT,
                "validation_error",
            ),
        ]:
            with pytest.raises(aio.AioRpcError) as info:
                await call
            assert info.value.code() == code
            assert ("khala-error-code", error) in tuple(info.value.trailing_metadata())
        with pytest.raises(aio.AioRpcError) as info:
            await stub.GetWorker(pb.GetWorkerRequest(worker_id=f"a{unique}"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(aio.AioRpcError) as info:
            await stub.ReadStream(
                pb.ReadStreamRequest(stream_id="worker:ghost"), metadata=service_metadata
            ).read()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


class FakeContext:
    """The two ServicerContext methods `_within_deadline` uses."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[Any, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


async def test_work_past_the_deadline_is_cancelled_and_aborted() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    context = FakeContext(0.05)
    with pytest.raises(RuntimeError, match="aborted"):
        await _within_deadline(context, forever())
    assert started.is_set() and cancelled.is_set()
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_expired_deadline_aborts_before_any_work() -> None:
    ran = False

    async def work() -> int:
        nonlocal ran
        ran = True
        return 1

    context = FakeContext(0.0)
    with pytest.raises(RuntimeError, match="aborted"):
        await _within_deadline(context, work())
    assert not ran and context.aborted is not None


async def test_work_within_the_deadline_returns() -> None:
    async def work() -> int:
        return 7

    assert await _within_deadline(FakeContext(30.0), work()) == 7
    assert await _within_deadline(FakeContext(None), work()) == 7


@pytest.mark.integration
async def test_list_streams_pages_by_org_and_kind(
    api: Any, identity: Any, unique: str, grpc_target: str, service_metadata: Any
) -> None:
    org = f"ls{unique}"
    await seeded_worker(api, identity, org, f"w1{unique}")
    await seeded_worker(api, identity, org, f"w2{unique}")
    token = identity.login({org: "member"})
    for name in ("r1", "r2", "r3"):
        status, _, _ = await api.call(
            "POST", "/api/v1/runs", token, {"org_id": org, "run_id": f"{name}{unique}"}
        )
        assert status == 201
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        seen: list[Any] = []
        token_ = ""
        while True:
            page = await stub.ListStreams(
                pb.ListStreamsRequest(org_id=org, page_size=2, page_token=token_),
                metadata=service_metadata,
            )
            assert len(page.streams) <= 2
            seen.extend(page.streams)
            token_ = page.next_page_token
            if not token_:
                break
        ids = [s.stream_id for s in seen]
        assert ids == sorted(ids)
        assert ids == sorted(
            [f"run:r{i}{unique}" for i in (1, 2, 3)] + [f"worker:w{i}{unique}" for i in (1, 2)]
        )
        heads = {s.stream_id: s.head_seq for s in seen}
        assert heads[f"worker:w1{unique}"] == 3 and heads[f"run:r1{unique}"] == 1
        assert all(s.org_id == org and s.head_occurred_at_ms > 0 for s in seen)

        runs_only = await stub.ListStreams(
            pb.ListStreamsRequest(org_id=org, kind=events_pb2.STREAM_KIND_RUN),
            metadata=service_metadata,
        )
        assert [s.stream_id for s in runs_only.streams] == [f"run:r{i}{unique}" for i in (1, 2, 3)]
        assert runs_only.next_page_token == ""
        with pytest.raises(aio.AioRpcError) as info:
            await stub.ListStreams(
                pb.ListStreamsRequest(org_id="bad org"), metadata=service_metadata
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
