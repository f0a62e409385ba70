"""gRPC RED metrics and the client channel options of khala_common.grpc_server."""

from __future__ import annotations

import json

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
        assert (
            REGISTRY.get_sample_value(
                "khala_grpc_request_duration_seconds_count", {"method": CHECK}
            )
            or 0
        ) >= 2
    finally:
        await server.stop(0)


def test_client_channels_balance_round_robin_with_keepalive() -> None:
    options = dict(CHANNEL_OPTIONS)
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    assert options["grpc.keepalive_time_ms"] > 0


async def test_round_robin_skips_a_backend_whose_readiness_fails() -> None:
    """Two servers behind one channel: calls spread over both; once one's /readyz
    verdict turns false its health says NOT_SERVING and calls go to the other."""
    import asyncio

    from khala_common.grpc_server import service_metadata
    from khala_common.http import Readiness

    servers, readiness = [], []
    for name in (b"a", b"b"):
        server = GrpcServer("127.0.0.1", 0, "token")
        handler = grpc.method_handlers_generic_handler(
            "khala.test.Who",
            {"Name": grpc.unary_unary_rpc_method_handler(lambda _r, _c, n=name: n)},
        )
        server.add(lambda _s, srv, h=handler: srv.add_generic_rpc_handlers((h,)), None, [])
        ready = Readiness()
        server.follow(ready)
        await server.start()
        servers.append(server)
        readiness.append(ready)
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    try:
        async with insecure_channel(target) as channel:
            who = channel.unary_unary("/khala.test.Who/Name")

            async def names(n: int) -> set[bytes]:
                return {await who(b"", metadata=service_metadata("token")) for _ in range(n)}

            assert await names(10) == {b"a", b"b"}
            broken = True

            async def failing() -> None:
                if broken:
                    raise RuntimeError("postgres down")

            readiness[1].add("postgres", failing)
            assert await readiness[1].problems()  # the probe asks: the verdict turns false
            for _ in range(50):  # the client's health watch hears it
                if await names(4) == {b"a"}:
                    break
                await asyncio.sleep(0.05)
            assert await names(20) == {b"a"}
            broken = False
            assert await readiness[1].problems() == []
            for _ in range(50):
                if await names(4) == {b"a", b"b"}:
                    break
                await asyncio.sleep(0.05)
            assert await names(10) == {b"a", b"b"}
    finally:
        for server in servers:
            await server.stop(0)
