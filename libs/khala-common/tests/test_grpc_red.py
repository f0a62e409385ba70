"""gRPC RED metrics and the client channel options of khala_common.grpc_server."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from khala_common.grpc_server import CHANNEL_OPTIONS, GrpcServer, insecure_channel

CHECK = "/grpc.health.v1.Health/Check"


def _count(code: str) -> float:
    value = REGISTRY.get_sample_value("khala_grpc_requests_total", {"method": CHECK, "code": code})
    return value or 0.0


async def test_every_call_is_counted_by_method_and_code_and_timed() -> None:
    server = GrpcServer("127.0.0.1", 0, "token")
    await server.start()
    try:
        ok_before, missing_before = _count("OK"), _count("NOT_FOUND")
        async with insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(service=""))
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert _count("OK") == ok_before + 1
        assert _count("NOT_FOUND") == missing_before + 1
        assert (REGISTRY.get_sample_value("khala_grpc_request_duration_seconds_count", {"method": CHECK}) or 0) >= 2
    finally:
        await server.stop(0)


def test_client_channels_balance_round_robin_with_keepalive() -> None:
    options = dict(CHANNEL_OPTIONS)
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.keepalive_time_ms"] > 0
